"""AttnLRP on a Llama-shaped model: explain against forward-only and a plain gradient, same run.

    python benchmarks/bench_llama.py [--lengths 128 512 1024] [--device cuda] [--dtype bfloat16]

Model: hidden 512, 8 layers, 8 heads, 4 KV heads, vocab 32000 (random weights). For each sequence
length it prints the median time and peak memory of the forward pass alone, of the plain gradient
(forward + backward of the target logit w.r.t. the input embeddings, `torch.autograd.grad`), and of
`lrpgraph.explain(rules="attnlrp")`; ratios are against the gradient measured in the same run.
Targets (issue 3): explain ≤ 1.3× the gradient's time and ≤ its peak memory.
"""

from __future__ import annotations

import argparse

import torch
import transformers
from measure import measure, mib, table

import lrpgraph


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


def bench_length(model, length: int, rules: str, device, repeats: int) -> list[tuple]:
    ids = torch.randint(0, 32000, (1, length), device=device)
    inputs = {"input_ids": ids}
    target = 123

    def forward():
        with torch.no_grad():
            return model(**inputs).logits[0, -1, target]

    def gradient():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        logit = model(inputs_embeds=embeds).logits[0, -1, target]
        return torch.autograd.grad(logit, embeds)[0]

    def explain():
        return lrpgraph.explain(model, inputs, target=target, rules=rules).relevance["input_ids"]

    explain()  # trace once (cached) outside the measurement
    f, g, e = (measure(fn, device, repeats) for fn in (forward, gradient, explain))
    return [
        (
            length,
            name,
            f"{m.seconds * 1000:.1f}",
            mib(m.peak_bytes),
            f"{m.seconds / g.seconds:.2f}",
            f"{m.peak_bytes / g.peak_bytes:.2f}",
        )
        for name, m in (("forward only", f), ("gradient (fwd+bwd)", g), (f"explain {rules}", e))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rules", default="attnlrp")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = llama(device, dtype)
    rows = []
    for length in args.lengths:
        rows += bench_length(model, length, args.rules, device, args.repeats)
    print(f"device: {device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(table(rows, ("tokens", "method", "median ms", "peak MiB", "time ×grad", "memory ×grad")))


if __name__ == "__main__":
    main()
