"""A corpus of prompts of distinct lengths: lrpgraph (one trace for all) against input gradients, same run.

    python benchmarks/bench_corpus.py [--prompts 64] [--shortest 16] [--longest 512] [--repeats 3] [--device cuda]

Model: the Llama-shaped model of bench_llama.py (hidden 512, 8 layers, vocab 32000, random weights).
Prompts: `--prompts` token sequences of distinct lengths spread evenly from `--shortest` to `--longest`,
each explained for the logit of one token at its last position. Measured, each as a total over the corpus
(`--repeats` times; report.py takes the median):
- the gradients a user would write, one call per prompt (parameters without requires_grad, the head at the
  last position only), and the same with the head at every position (the model's default);
- the same gradients in explain_many's batches (length order, ≤ `--batch-size` inputs and ≤ `--max-tokens`
  padded tokens a batch; right-padded with an attention mask, the head applied to each row's last token):
  explain_many's peer;
- one `lrpgraph.explain` call per prompt, from an empty trace cache (the trace included), and a second call per
  prompt (the trace made); prompt by prompt, these and the per-prompt gradients take turns;
- `lrpgraph.explain_many` over the whole corpus, from an empty cache and again with the trace made.
Then the first call of a new process at 128 tokens, each in its own process: explain with an empty on-disk
trace cache (it traces), explain with that cache filled by the previous process, and the gradient; each
process also times warm gradients after its first call. Each first call is timed after `gc.collect()`: a new
process's first full collection sweeps what its imports allocated and would land in whichever call comes
first; its time is recorded beside.
Writes benchmarks/results/corpus.json (--json) and prints the tables report.py makes from it.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import torch
from bench_llama import TARGET, describe, frozen, gradient, llama, prompt, timed
from measure import Record, in_new_process, json_argument, seconds
from report import corpus_block

import lrpgraph

FIRST_CALL_TOKENS = 128


def corpus(count: int, shortest: int, longest: int) -> list[torch.Tensor]:
    lengths = sorted({round(shortest + i * (longest - shortest) / max(1, count - 1)) for i in range(count)})
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 32000, (1, n), generator=generator) for n in lengths]


def batches(lengths: list[int], size: int, max_tokens: int) -> list[list[int]]:
    """explain_many's batches (its documented rule): inputs in length order, runs of at most `size` inputs
    whose count × longest length stays within `max_tokens`."""
    runs: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if runs and len(runs[-1]) < size and (len(runs[-1]) + 1) * lengths[i] <= max_tokens:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def batched_gradient(model, prompts: list[torch.Tensor]) -> torch.Tensor:
    """The input-embedding gradients of each prompt's logit of TARGET at its last token, in one padded batch:
    right-padded with an attention mask, the head applied to each row's last real position only. Run it on a
    `frozen` model."""
    lengths = torch.tensor([p.shape[1] for p in prompts])
    longest = int(lengths.max())
    ids = torch.cat([torch.nn.functional.pad(p, (0, longest - p.shape[1])) for p in prompts])
    mask = (torch.arange(longest) < lengths[:, None]).long().to(ids.device)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    hidden = model.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    last = hidden[torch.arange(len(prompts)), lengths.to(ids.device) - 1]
    logits = model.get_output_embeddings()(last)
    return torch.autograd.grad(logits[:, TARGET].sum(), embeds)[0]


def first_call(device: str, length: int, cache: str, first: str) -> dict:
    """In a new process: the first `first` call ("explain", with the trace cache in `cache`, or "gradient"),
    timed after gc.collect(), then a warm gradient of each kind, each after gc.collect()."""
    device = torch.device(device)
    model = llama(device, torch.float32)
    ids = prompt(length, device)
    start = time.perf_counter()
    gc.collect()
    found = {"collect": time.perf_counter() - start}
    if first == "explain":
        inputs = {"input_ids": ids}
        found["first"] = seconds(
            lambda: lrpgraph.explain(model, inputs, target=TARGET, rules="attnlrp", cache_dir=cache), device
        )
    with frozen(model):
        if first == "gradient":
            found["first"] = seconds(lambda: gradient(model, ids, TARGET), device)
        for name, full_head in (("gradient", False), ("gradient_full_head", True)):
            gradient(model, ids, TARGET, full_head=full_head)
            gc.collect()
            found[name] = seconds(lambda full_head=full_head: gradient(model, ids, TARGET, full_head=full_head), device)
    return found


def totals(model, prompts: list[torch.Tensor], args, device) -> dict:
    """Seconds of each way through the whole corpus, by the key report.py reads. Prompt by prompt, the per-prompt
    methods take turns (bench_llama.timed): the gradients, the prompt's first explain (the corpus's first one
    traces, the trace cache being cleared) and a second one."""
    lrpgraph.clear_cache()
    found = dict.fromkeys(("gradient", "gradient_full_head", "explain_each_traced", "explain_each"), 0.0)
    for ids in prompts:

        def explain(ids=ids):
            return lrpgraph.explain(model, {"input_ids": ids}, target=TARGET, rules="attnlrp")

        turns = {
            "gradient": (lambda ids=ids: gradient(model, ids, TARGET), True),
            "gradient_full_head": (lambda ids=ids: gradient(model, ids, TARGET, full_head=True), True),
            "explain_each_traced": (explain, False),
            "explain_each": (explain, False),
        }
        for name, took in timed(model, turns, device, repeats=1, warmup=0).items():
            found[name] += took[0]
    runs = batches([p.shape[1] for p in prompts], args.batch_size, args.max_tokens)
    with frozen(model):
        found["gradient_batched"] = sum(
            seconds(lambda run=run: batched_gradient(model, [prompts[i] for i in run]), device) for run in runs
        )
    items = [{"input_ids": ids[0]} for ids in prompts]

    def many() -> float:
        return seconds(
            lambda: lrpgraph.explain_many(
                model, items, target=TARGET, rules="attnlrp", batch_size=args.batch_size, max_tokens=args.max_tokens
            ),
            device,
        )

    lrpgraph.clear_cache()
    found["explain_many_traced"] = many()
    found["explain_many"] = many()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--shortest", type=int, default=16)
    parser.add_argument("--longest", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="times the whole corpus is measured")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    json_argument(parser, "corpus")
    args = parser.parse_args()
    device = torch.device(args.device)
    prompts = [ids.to(device) for ids in corpus(args.prompts, args.shortest, args.longest)]
    model = llama(device, torch.float32)
    settings = {
        "model": describe(model),
        "rules": "attnlrp",
        "lengths": [p.shape[1] for p in prompts],
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "first_call_tokens": FIRST_CALL_TOKENS,
    }
    record = Record("corpus", device, settings)
    with frozen(model):
        gradient(model, prompts[0], TARGET)  # warm up the kernels for every method alike
    runs = [totals(model, prompts, args, device) for _ in range(args.repeats)]
    corpus_seconds = {name: [run[name] for run in runs] for name in runs[0]}
    first_calls = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            for name, first in (
                ("explain_cold", "explain"),
                ("explain_warm_disk", "explain"),
                ("gradient", "gradient"),
            ):
                found = in_new_process(
                    first_call, device=str(device), length=FIRST_CALL_TOKENS, cache=cache, first=first
                )
                first_calls.setdefault(name, []).append(found)
    record.write(args.json, {"corpus_seconds": corpus_seconds, "first_call": first_calls})
    print(corpus_block(record.data))


if __name__ == "__main__":
    main()
