"""Promises on a Llama-shaped model: memory budgets and K targets in one pass, against the input gradient.

    python benchmarks/bench_memory.py [--lengths 512 2048 4096] [--repeats 3] [--device cuda] [--dtype bfloat16]

Model and gradients as in bench_llama.py (hidden 512, 8 layers, vocab 32000; the gradient with the head at the
last position and no parameter gradients, and the same with the head at every position). For each length it
measures median time and peak memory (a second process, see measure.py) of: the gradient; the full-head
gradient; explain(attnlrp) with no budget; explain with a budget of a quarter of the no-budget activation
store's peak; K = 8 targets in one explain; and the gradients of those 8 logits over one forward, the
K-target explain's peers: one vmapped backward (`is_grads_batched`) and one backward each. The activation
store's own peak (`Explanation.stats`) is recorded beside.
Writes benchmarks/results/memory.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse

import torch
from bench_llama import TARGET, describe, gradient, llama, measured, prompt, timed
from measure import Record, in_new_process, json_argument, peak_memory
from report import memory_block

import lrpgraph

K = 8


def methods(model, ids: torch.Tensor) -> tuple[dict, dict]:
    """(what is measured at one length by the key report.py reads, the activation store's peaks and budget)."""
    inputs = {"input_ids": ids}
    targets = list(range(TARGET, TARGET + K))
    free = lrpgraph.explain(model, inputs, target=TARGET, rules="attnlrp")
    budget = free.stats["peak_activation_bytes"] // 4
    budgeted = lrpgraph.explain(model, inputs, target=TARGET, rules="attnlrp", memory_budget=budget)
    store = {
        "budget": budget,
        "explain": free.stats["peak_activation_bytes"],
        "explain_budget": budgeted.stats["peak_activation_bytes"],
    }

    def run(**kwargs):
        return lambda: lrpgraph.explain(model, inputs, rules="attnlrp", **kwargs).relevance["input_ids"]

    return {
        "gradient": (lambda: gradient(model, ids, TARGET), True),
        "gradient_full_head": (lambda: gradient(model, ids, TARGET, full_head=True), True),
        "explain": (run(target=TARGET), False),
        "explain_budget": (run(target=TARGET, memory_budget=budget), False),
        f"gradient_{K}_targets_batched": (lambda: gradient(model, ids, targets, batched=True), True),
        f"gradient_{K}_targets_each": (lambda: gradient(model, ids, targets), True),
        f"explain_{K}_targets": (run(target=lrpgraph.Targets(targets)), False),
    }, store


def peaks(lengths: list[int], device: str, dtype: str) -> dict:
    """Peak bytes of every method at every length, in a memory process (measure.in_new_process)."""
    device = torch.device(device)
    model = llama(device, getattr(torch, dtype))
    found = {}
    for n in lengths:
        table, _ = methods(model, prompt(n, device))
        found[str(n)] = measured(model, table, lambda fn: peak_memory(fn, device))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    json_argument(parser, "memory")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = llama(device, getattr(torch, args.dtype))
    settings = {
        "model": describe(model),
        "dtype": args.dtype,
        "rules": "attnlrp",
        "repeats": args.repeats,
        "lengths": args.lengths,
        "targets": K,
    }
    record = Record("memory", device, settings)
    rows = []
    for length in args.lengths:
        table, store = methods(model, prompt(length, device))
        rows.append(
            {
                "tokens": length,
                "seconds": timed(model, table, device, args.repeats),
                "store_peak_bytes": store,
            }
        )
    memory = in_new_process(peaks, memory=True, lengths=args.lengths, device=str(device), dtype=args.dtype)
    for row in rows:
        row["peak_bytes"] = memory[str(row["tokens"])]
    record.write(args.json, {"lengths": rows})
    print(memory_block(record.data))


if __name__ == "__main__":
    main()
