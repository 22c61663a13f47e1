"""AttnLRP on a Llama-shaped model: a warm explain against the input gradient of the same logit, same run.

    python benchmarks/bench_llama.py [--lengths 128 512 1024] [--repeats 3] [--device cuda] [--dtype bfloat16]

Model: hidden 512, 8 layers, 8 heads, 4 KV heads, vocab 32000 (random weights, seed 0). For each sequence
length it measures (median of --repeats warm calls, the methods taking turns; peak memory in a second process,
see measure.py):
- forward only, the vocabulary head at the last position (what explain's forward computes);
- the gradient a user would write: parameters without requires_grad, the input embeddings the only leaf,
  the head at the last position only (`logits_to_keep=1`), `torch.autograd.grad` of the explained logit;
- the same gradient with the head over every position (`logits_to_keep=0`, the model's default): the
  baseline earlier versions of this script used, kept as a second column;
- `lrpgraph.explain(rules="attnlrp")`, traced before timing (the model as the user has it).
Writes benchmarks/results/llama.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch
import transformers
from measure import Record, in_new_process, json_argument, peak_memory, seconds
from report import llama_block

import lrpgraph

TARGET = 123


def llama(device, dtype, vocab: int = 32000, layers: int = 8) -> torch.nn.Module:
    """The Llama-shaped benchmark model (hidden 512, 8 heads / 4 KV heads), random weights, seed 0."""
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=8192,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def describe(model: torch.nn.Module) -> str:
    """The benchmark model in words, read from its config (for the JSON record)."""
    c = model.config
    return (
        f"Llama-shaped: hidden {c.hidden_size}, {c.num_hidden_layers} layers, {c.num_attention_heads} heads, "
        f"{c.num_key_value_heads} KV heads, vocab {c.vocab_size}, random weights"
    )


def prompt(length: int, device, vocab: int = 32000) -> torch.Tensor:
    """Random token ids [1, length], the same for a given length in every process."""
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length)).to(device)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The parameters without requires_grad while the block runs, as a user computing input gradients sets
    them (no parameter gradient is built or kept); the model's own flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gradient(
    model, ids: torch.Tensor, target: int | list[int], full_head: bool = False, batched: bool = False
) -> torch.Tensor:
    """d logit / d input embeddings for the logit of `target` at the last position, or of each of a list of
    targets over one forward: the head computed at the last position only (`logits_to_keep=1`), or at every
    position with `full_head` (the model's default). Several targets take one backward each (the graph
    retained), or with `batched` one vmapped backward (`is_grads_batched`: faster, more memory). Run it on a
    `frozen` model, so that the embeddings are the only leaf."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = model(inputs_embeds=embeds, logits_to_keep=0 if full_head else 1, use_cache=False).logits[0, -1]
    return backward(logits[target], embeds, batched)


def backward(logits: torch.Tensor, embeds: torch.Tensor, batched: bool) -> torch.Tensor:
    """The gradient of each of `logits` (a scalar, or a vector: [K, *embeds.shape]) with respect to embeds."""
    if logits.dim() == 0:
        return torch.autograd.grad(logits, embeds)[0]
    if batched:
        seeds = torch.eye(len(logits), dtype=logits.dtype, device=logits.device)
        return torch.autograd.grad(logits, embeds, seeds, is_grads_batched=True)[0]
    last = len(logits) - 1
    return torch.stack([torch.autograd.grad(v, embeds, retain_graph=i < last)[0] for i, v in enumerate(logits)])


def measured(model, methods: dict, measure) -> dict:
    """`measure(fn)` of each method in turn (name → (fn, run frozen?)); a gradient runs on the `frozen` model."""
    found = {}
    for name, (fn, freeze) in methods.items():
        with frozen(model) if freeze else contextlib.nullcontext():
            found[name] = measure(fn)
    return found


def timed(model, methods: dict, device, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each method (name → (fn, run frozen?)): `warmup` untimed rounds, then `repeats` rounds in
    which the methods take turns, so that a machine growing busier or quieter during the run slows them alike
    rather than the one measured then."""
    found = {name: [] for name in methods}
    for round in range(warmup + repeats):
        for name, (fn, freeze) in methods.items():
            with frozen(model) if freeze else contextlib.nullcontext():
                took = seconds(fn, device)
            if round >= warmup:
                found[name].append(took)
    return found


def methods(model, ids: torch.Tensor, rules: str) -> dict:
    """What this benchmark measures at one length, by the key report.py reads."""

    def forward():
        with torch.no_grad():
            return model(input_ids=ids, logits_to_keep=1, use_cache=False).logits[0, -1, TARGET]

    def explain():
        return lrpgraph.explain(model, {"input_ids": ids}, target=TARGET, rules=rules).relevance["input_ids"]

    return {
        "forward": (forward, False),
        "gradient": (lambda: gradient(model, ids, TARGET), True),
        "gradient_full_head": (lambda: gradient(model, ids, TARGET, full_head=True), True),
        "explain": (explain, False),
    }


def peaks(lengths: list[int], rules: str, device: str, dtype: str) -> dict:
    """Peak bytes of every method at every length, in a memory process (measure.in_new_process)."""
    device = torch.device(device)
    model = llama(device, getattr(torch, dtype))
    return {
        str(n): measured(model, methods(model, prompt(n, device), rules), lambda fn: peak_memory(fn, device))
        for n in lengths
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules", default="attnlrp")
    json_argument(parser, "llama")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = llama(device, dtype)
    settings = {
        "model": describe(model),
        "dtype": args.dtype,
        "rules": args.rules,
        "repeats": args.repeats,
        "lengths": args.lengths,
    }
    record = Record("llama", device, settings)
    rows = []
    for length in args.lengths:
        found = timed(model, methods(model, prompt(length, device), args.rules), device, args.repeats)
        rows.append({"tokens": length, "seconds": found})
    memory = in_new_process(
        peaks, memory=True, lengths=args.lengths, rules=args.rules, device=str(device), dtype=args.dtype
    )
    for row in rows:
        row["peak_bytes"] = memory[str(row["tokens"])]
    record.write(args.json, {"lengths": rows})
    print(llama_block(record.data))


if __name__ == "__main__":
    main()
