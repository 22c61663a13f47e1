"""State-space models: MambaLRP's time and peak memory against the gradient, as the sequence grows.

    python benchmarks/bench_mamba.py [--mamba 64 256] [--mamba2 256 1024] [--repeats 3]

Two 4-layer models (width 128, state 16, random weights): Mamba, whose scan transformers writes as a Python
loop over the time steps (lrpgraph traces it as one `linear_scan` op where it reproduces the function), and
Mamba-2, whose chunked scan is a fixed set of ops. At each length: the gradient (the logit at the last position,
the gradient at the input embeddings, parameters frozen), the first `explain` of a fresh copy of the model (its
trace included: no trace cache in memory or on disk), warm explains (median of --repeats, taking turns with the
gradient) and the peak memory of each (a second process).
Writes benchmarks/results/mamba.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import transformers
from bench_llama import frozen, gradient, measured, prompt, timed
from measure import Record, in_new_process, json_argument, peak_memory
from report import mamba_block

import lrpgraph

TARGET, VOCAB = 7, 1000


def build(kind: str) -> torch.nn.Module:
    """The benchmark model, seeded: the same in every process."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=128, state_size=16, num_hidden_layers=4, expand=2, use_cache=False)
    if kind == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(**common)).eval()
    config = transformers.Mamba2Config(**common, num_heads=8, head_dim=32, n_groups=1, chunk_size=64)
    return transformers.Mamba2ForCausalLM(config).eval()


def methods(model: torch.nn.Module, ids: torch.Tensor) -> dict:
    """What this benchmark measures at one length, by the key report.py reads."""

    def explain():
        return lrpgraph.explain(model, {"input_ids": ids}, target=TARGET, rules="mamba-lrp").relevance["input_ids"]

    return {"gradient": (lambda: gradient(model, ids, TARGET), True), "explain": (explain, False)}


def peaks(kind: str, length: int) -> dict:
    """Peak bytes of each method at one length, in a memory process (measure.in_new_process)."""
    model = build(kind)
    cpu = torch.device("cpu")
    return measured(model, methods(model, prompt(length, cpu, VOCAB)), lambda fn: peak_memory(fn, cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mamba", type=int, nargs="+", default=[64, 256], help="lengths for Mamba")
    parser.add_argument("--mamba2", type=int, nargs="+", default=[256, 1024], help="lengths for Mamba-2")
    parser.add_argument("--repeats", type=int, default=3)
    json_argument(parser, "mamba")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    settings = {"repeats": args.repeats, "threads": torch.get_num_threads(), "rules": "mamba-lrp"}
    record = Record("mamba", cpu, settings)
    rows = []
    for kind, lengths in (("mamba", args.mamba), ("mamba2", args.mamba2)):
        model = build(kind)
        for length in lengths:
            ids = prompt(length, cpu, VOCAB)
            table = methods(model, ids)
            with frozen(model):
                gradient(model, ids, TARGET)  # warm the gradient's kernels before the first explain is timed
            fresh = copy.deepcopy(model)  # no trace of its own yet
            started = time.perf_counter()
            ex = lrpgraph.explain(fresh, {"input_ids": ids}, target=TARGET, rules="mamba-lrp")
            first = time.perf_counter() - started
            del fresh
            rows.append(
                {
                    "model": kind,
                    "tokens": length,
                    "nodes": ex.stats["nodes"],
                    "tracer": ex.stats["tracer"],
                    "first_explain": first,
                    "seconds": timed(model, table, cpu, args.repeats),
                    "peak_bytes": in_new_process(peaks, memory=True, kind=kind, length=length),
                }
            )
            print(f"{kind} at {length} tokens done", flush=True)
    record.write(args.json, {"rows": rows})
    print(mamba_block(record.data))


if __name__ == "__main__":
    main()
