"""Promises on a Llama-shaped model: memory budgets and K targets in one pass, against a plain gradient.

    python benchmarks/bench_memory.py [--lengths 512 2048 4096] [--device cuda] [--dtype bfloat16]

Model as in bench_llama.py (hidden 512, 8 layers, 8 heads, 4 KV heads, vocab 32000). For each
length it prints median time and peak memory of: a plain gradient (forward + backward of the
target logit w.r.t. the input embeddings); explain(attnlrp) with no budget; explain with a budget of
a quarter of the no-budget activation peak; and K = 8 targets in one pass. Peak memory is measured
around the whole call (profiler records on CPU, max_memory_allocated on CUDA); the activation
store's own peak is printed beside it. Ratios are against the gradient, or against the no-budget
explain where the issue's targets say so: no-budget peak ≤ 0.5× the gradient's at 4096 tokens;
budgeted run within the budget at ≤ 1.4× the no-budget time; K = 8 in one pass ≤ 3× one target.
"""

from __future__ import annotations

import argparse

import torch
from bench_llama import llama
from measure import measure, mib, table

import lrpgraph


def bench_length(model, length: int, device, repeats: int) -> list[tuple]:
    ids = torch.randint(0, 32000, (1, length), device=device)
    inputs = {"input_ids": ids}
    target = 123

    def gradient():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        logit = model(inputs_embeds=embeds).logits[0, -1, target]
        return torch.autograd.grad(logit, embeds)[0]

    free = lrpgraph.explain(model, inputs, target=target, rules="attnlrp")
    budget = free.stats["peak_activation_bytes"] // 4
    budgeted = lrpgraph.explain(model, inputs, target=target, rules="attnlrp", memory_budget=budget)
    targets = lrpgraph.Targets(list(range(target, target + 8)))

    def run(**kwargs):
        return lambda: lrpgraph.explain(model, inputs, rules="attnlrp", **kwargs).relevance["input_ids"]

    g = measure(gradient, device, repeats)
    e = measure(run(target=target), device, repeats)
    b = measure(run(target=target, memory_budget=budget), device, repeats)
    k = measure(run(target=targets), device, repeats)
    return [
        (length, "gradient (fwd+bwd)", f"{g.seconds * 1000:.0f}", mib(g.peak_bytes), "", "1.00", ""),
        (
            length,
            "explain, no budget",
            f"{e.seconds * 1000:.0f}",
            mib(e.peak_bytes),
            mib(free.stats["peak_activation_bytes"]),
            f"{e.peak_bytes / g.peak_bytes:.2f}",
            "1.00",
        ),
        (
            length,
            f"explain, budget {mib(budget)} MiB",
            f"{b.seconds * 1000:.0f}",
            mib(b.peak_bytes),
            mib(budgeted.stats["peak_activation_bytes"]),
            f"{b.peak_bytes / g.peak_bytes:.2f}",
            f"{b.seconds / e.seconds:.2f}",
        ),
        (
            length,
            "explain, K=8 targets",
            f"{k.seconds * 1000:.0f}",
            mib(k.peak_bytes),
            "",
            f"{k.peak_bytes / g.peak_bytes:.2f}",
            f"{k.seconds / e.seconds:.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = llama(device, getattr(torch, args.dtype))
    rows = []
    for length in args.lengths:
        rows += bench_length(model, length, device, args.repeats)
    print(f"device: {device}, dtype {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(table(rows, ("tokens", "method", "median ms", "peak MiB", "store peak MiB", "memory ×grad", "time ×explain")))


if __name__ == "__main__":
    main()
