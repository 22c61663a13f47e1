"""A Llama-shaped model too big for float32 on this machine, explained with int8 weights (torchao weight-only).

    python benchmarks/bench_quantized.py [--layers 28] [--twin-layers 4] [--tokens 512]

The model (hidden 3072, MLP 8192, 24 heads over 8 key/value heads, vocabulary 32000: about 3.0 billion parameters
at 28 layers) is built on the meta device and made real one module at a time, each linear layer quantized by
torchao's `Int8WeightOnlyConfig` as soon as it exists, so a float32 copy of the whole model never exists. In its own
process (freed blocks returned to the system, see measure.py), after a short call that traces it:
  - one AttnLRP explain at --tokens tokens: seconds, and the peak memory the call held beyond the model itself;
  - the fair gradient of the same logit (the head at the explained position only, the input embeddings' gradient,
    no parameter gradients): seconds;
  - the model's own resident bytes (int8 weights, float embeddings and norms).
A float32 twin of --twin-layers layers and the same twin in int8 give the time of each at --tokens tokens (what
int8 weights cost in time: each layer's weight is dequantized where a rule reads it); what the float32 model
would need in memory is arithmetic: its parameters × 4 bytes plus the explain's own peak.
Writes benchmarks/results/quantized.json (--json) and prints the block report.py makes from it.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch
import transformers
from measure import Record, in_new_process, json_argument, peak_memory
from report import quantized_block

import lrpgraph

SHAPE = dict(
    vocab_size=32000, hidden_size=3072, intermediate_size=8192, num_attention_heads=24, num_key_value_heads=8,
    max_position_embeddings=4096,
)  # fmt: skip


def build(layers: int, int8: bool) -> torch.nn.Module:
    """The Llama of SHAPE with `layers` blocks, random weights (seeded), linear layers in int8 if asked; one module
    is float32 at a time while it is made."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    config = transformers.LlamaConfig(**SHAPE, num_hidden_layers=layers)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model.model.rotary_emb = type(model.model.rotary_emb)(config)  # its buffers are computed, not loaded
    generator = torch.Generator().manual_seed(0)
    for module in [model.model.embed_tokens, *model.model.layers, model.model.norm, model.lm_head]:
        module.to_empty(device="cpu")
        with torch.no_grad():
            for p in module.parameters():  # norms' scales 1, weight matrices N(0, 0.02²)
                p.fill_(1.0) if p.dim() == 1 else p.normal_(0, 0.02, generator=generator)
        if int8 and module is not model.model.embed_tokens and module is not model.model.norm:
            quantize_(module, Int8WeightOnlyConfig())
        gc.collect()
    return model.eval()


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's state as stored (a quantized weight: its int8 data and scales)."""
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if type(t) in (torch.Tensor, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        else:
            names, _ = t.__tensor_flatten__()
            total += sum(getattr(t, n).numel() * getattr(t, n).element_size() for n in names)
    return total


def fair_gradient(model: torch.nn.Module, ids: torch.Tensor, target: int) -> torch.Tensor:
    """∂ logit[target] at the last position / ∂ input embeddings, the head applied at that position only."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    hidden = model.model(inputs_embeds=embeds).last_hidden_state
    (grad,) = torch.autograd.grad(model.lm_head(hidden[:, -1])[0, target], embeds)
    return grad


def measure(layers: int, int8: bool, tokens: int, peak: bool) -> dict:
    """In a process of its own: build, trace on a short call, then time one explain and one fair gradient at `tokens`
    tokens (with `peak`, the explain's peak memory instead of times)."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    started = time.perf_counter()
    model = build(layers, int8)
    built = time.perf_counter() - started
    ids = torch.randint(0, SHAPE["vocab_size"], (1, tokens), generator=torch.Generator().manual_seed(1))
    target = 7
    started = time.perf_counter()
    lrpgraph.explain(model, ids[:, :16], target=target, rules="attnlrp")
    first = time.perf_counter() - started
    result: dict = {"layers": layers, "int8": int8, "build_seconds": built, "first_call_seconds": first}
    result["resident_bytes"] = resident_bytes(model)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    explained = {}

    def explain() -> None:
        explained["ex"] = lrpgraph.explain(model, ids, target=target, rules="attnlrp")

    if peak:
        result["explain_peak_bytes"] = peak_memory(explain, torch.device("cpu"), warmup=0)
    else:
        started = time.perf_counter()
        explain()
        result["explain_seconds"] = time.perf_counter() - started
    ex = explained.pop("ex")
    result["conservation_error"] = float(ex.conservation.error.abs().max())
    result["finite"] = bool(torch.isfinite(ex.relevance["input_ids"]).all())
    del ex
    if not peak:
        started = time.perf_counter()
        fair_gradient(model, ids, target)
        result["gradient_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--twin-layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    json_argument(parser, "quantized")
    args = parser.parse_args()
    settings = {"shape": SHAPE, "layers": args.layers, "twin_layers": args.twin_layers, "tokens": args.tokens}
    record = Record("quantized", torch.device("cpu"), settings)
    results = {
        "int8": in_new_process(measure, layers=args.layers, int8=True, tokens=args.tokens, peak=False),
        "int8_memory": in_new_process(measure, True, layers=args.layers, int8=True, tokens=args.tokens, peak=True),
        "twin_float32": in_new_process(measure, layers=args.twin_layers, int8=False, tokens=args.tokens, peak=False),
        "twin_int8": in_new_process(measure, layers=args.twin_layers, int8=True, tokens=args.tokens, peak=False),
    }
    record.write(args.json, results)
    print(quantized_block(record.data))


if __name__ == "__main__":
    main()
