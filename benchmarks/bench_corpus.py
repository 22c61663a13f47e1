"""A corpus of prompts of distinct lengths: lrpgraph (one trace for all) against plain gradients, same run.

    python benchmarks/bench_corpus.py [--prompts 64] [--shortest 16] [--longest 512] [--device cuda]

Model: the Llama-shaped model of bench_llama.py (hidden 512, 8 layers, vocab 32000, random weights).
Prompts: `--prompts` token sequences of distinct lengths spread evenly from `--shortest` to `--longest`,
each explained for the logit of one token at its last position. Printed, each as a total over the
corpus and as a ratio to the total of plain gradients (forward + backward of that logit with respect
to the input embeddings) measured in the same run:
- one `lrpgraph.explain` call per prompt, starting from an empty trace cache (the trace is included);
- `lrpgraph.explain_many` over the whole corpus (batches of similar length), from an empty cache, and
  once more with the trace made;
- the first explain of a new process whose on-disk trace cache is warm, against one gradient (a
  subprocess does it twice: the first run fills the cache, the second is measured), and the cold
  first call of a process for comparison. Both the explain and the gradient are timed after `gc.collect()`:
  the first full collection of a new process sweeps what its imports allocated (about 0.2 s here) and
  would land in whichever call comes first; its time is printed beside.
Targets (issue 12): one explain per prompt ≤ 1.5× the gradients, explain_many ≤ 1.0×, warm-cache first
call ≤ 3× one gradient.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_llama import llama
from measure import seconds, table

import lrpgraph

TARGET = 123


def corpus(count: int, shortest: int, longest: int) -> list[torch.Tensor]:
    lengths = sorted({round(shortest + i * (longest - shortest) / max(1, count - 1)) for i in range(count)})
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 32000, (1, n), generator=generator) for n in lengths]


def gradient(model, ids) -> torch.Tensor:
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    logit = model(inputs_embeds=embeds).logits[0, -1, TARGET]
    return torch.autograd.grad(logit, embeds)[0]


FIRST_CALL = """
import gc, json, sys, time, torch
sys.path.insert(0, {here!r})
from bench_llama import llama
import lrpgraph
device = torch.device({device!r})
model = llama(device, torch.float32)
ids = torch.randint(0, 32000, (1, {length}), device=device, generator=torch.Generator().manual_seed(1)).to(device)
start = time.perf_counter()
gc.collect()
collect = time.perf_counter() - start
start = time.perf_counter()
lrpgraph.explain(model, {{"input_ids": ids}}, target={target}, rules="attnlrp", cache_dir={cache!r})
explain = time.perf_counter() - start
def gradient():
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    return torch.autograd.grad(model(inputs_embeds=embeds).logits[0, -1, {target}], embeds)[0]
gradient()
gc.collect()
start = time.perf_counter()
gradient()
print(json.dumps({{"explain": explain, "gradient": time.perf_counter() - start, "collect": collect}}))
"""


def first_call(device: torch.device, length: int, cache: str) -> dict:
    script = FIRST_CALL.format(
        here=str(Path(__file__).parent), device=str(device), length=length, target=TARGET, cache=cache
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--shortest", type=int, default=16)
    parser.add_argument("--longest", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = llama(device, torch.float32)
    prompts = [ids.to(device) for ids in corpus(args.prompts, args.shortest, args.longest)]
    gradient(model, prompts[0])  # warm up the kernels for every method alike

    gradients = sum(seconds(lambda ids=ids: gradient(model, ids), device) for ids in prompts)
    lrpgraph.clear_cache()
    one_by_one = sum(
        seconds(lambda ids=ids: lrpgraph.explain(model, {"input_ids": ids}, target=TARGET, rules="attnlrp"), device)
        for ids in prompts
    )
    lrpgraph.clear_cache()
    items = [{"input_ids": ids[0]} for ids in prompts]

    def many() -> float:
        return seconds(
            lambda: lrpgraph.explain_many(model, items, target=TARGET, rules="attnlrp", batch_size=args.batch_size),
            device,
        )

    cold_many, warm_many = many(), many()  # the second finds the trace the first made
    rows = [
        ("plain gradient, one call per prompt", f"{gradients:.2f}", "1.00"),
        (
            "lrpgraph.explain, one call per prompt (trace included)",
            f"{one_by_one:.2f}",
            f"{one_by_one / gradients:.2f}",
        ),
        (
            f"lrpgraph.explain_many, batches of ≤ {args.batch_size} inputs, ≤ 2048 tokens (trace included)",
            f"{cold_many:.2f}",
            f"{cold_many / gradients:.2f}",
        ),
        ("the same again, the trace already made", f"{warm_many:.2f}", f"{warm_many / gradients:.2f}"),
    ]
    lengths = f"{prompts[0].shape[1]}–{prompts[-1].shape[1]}"
    print(f"{len(prompts)} prompts of distinct lengths {lengths}; device {device}, threads {torch.get_num_threads()}")
    print(table(rows, ("work", "seconds", "× gradients")))

    length = 128
    with tempfile.TemporaryDirectory() as cache:
        cold = first_call(device, length, cache)
        warm = first_call(device, length, cache)
    print(f"\nfirst explain of a new process at {length} tokens, against one gradient in that process")
    print(
        table(
            [
                (name, f"{run['explain']:.2f}", f"{run['explain'] / run['gradient']:.1f}", f"{run['collect']:.2f}")
                for name, run in (("cold (traces)", cold), ("trace cache on disk warm", warm))
            ],
            ("process", "seconds", "× one gradient", "gc.collect() before it, s"),
        )
    )


if __name__ == "__main__":
    main()
