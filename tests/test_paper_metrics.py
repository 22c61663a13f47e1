"""The papers' own evaluations, pinned on cases whose answers are known by hand: token insertion/pruning
(PA-LRP, NLP), pixel perturbation (PA-LRP, vision) and GAE (absLRP)."""

from __future__ import annotations

import math

import pytest
import torch

import lrpgraph
from lrpgraph import metrics
from lrpgraph.metrics.gae import mosaic, quadrant_map

UNK = 0


class BagOfWords(torch.nn.Module):
    """logit₁ = Σ_t w[id_t] (UNK scores 0), logit₀ = 0: a token's exact contribution is w[id]."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.embed = torch.nn.Embedding(len(weights), 1)
        with torch.no_grad():
            self.embed.weight.copy_(weights[:, None])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        score = self.embed(input_ids).sum((1, 2))
        return torch.stack([torch.zeros_like(score), score], 1)


def _bag(n: int = 7):
    weights = torch.tensor([0.0, 3.0, -2.0, 0.5, 1.5, -0.25, 2.5, -1.0], dtype=torch.float64)
    model = BagOfWords(weights).double().eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7][:n], [7, 6, 5, 4, 3, 2, 1][:n]])
    return model, ids, weights[ids]


def test_insertion_restores_ceil_f_n_tokens_most_relevant_first():
    model, ids, exact = _bag()
    curve = metrics.insertion_curve(model, {"input_ids": ids}, 1, exact, UNK)
    for row in range(2):
        ranked = exact[row].sort(descending=True).values
        for i, f in enumerate(curve.fractions.tolist()):
            n = math.ceil(f * 7 - 1e-9)  # 0, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7
            assert curve.logit[row, i].item() == pytest.approx(ranked[:n].sum().item(), abs=1e-12)
    assert [math.ceil(f * 7 - 1e-9) for f in curve.fractions.tolist()] == [0, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7]
    probability = torch.sigmoid(curve.logit)  # two classes [0, s]: p₁ = σ(s)
    torch.testing.assert_close(curve.probability, probability)
    base = torch.sigmoid(exact.sum(1, keepdim=True))
    torch.testing.assert_close(curve.squared_change, 2 * (probability - base) ** 2)  # Σ over both classes
    torch.testing.assert_close(curve.area_logit, torch.trapezoid(curve.logit, curve.fractions, dim=-1))
    reverse = metrics.insertion_curve(model, {"input_ids": ids}, 1, -exact, UNK)
    assert bool((curve.area_logit > reverse.area_logit).all())  # MERF of the exact map beats its reverse


def test_pruning_removes_the_least_absolute_relevance_first():
    model, ids, exact = _bag()
    curve = metrics.pruning_curve(model, {"input_ids": ids}, 1, exact, UNK, change="logit")
    row = exact[0]
    order = row.abs().argsort(stable=True)
    for i, f in enumerate(curve.fractions.tolist()):
        n = math.ceil(f * 7 - 1e-9)
        kept = row.sum() - row[order[:n]].sum()
        assert curve.logit[0, i].item() == pytest.approx(kept.item(), abs=1e-12)
        assert curve.squared_change[0, i].item() == pytest.approx((row.sum() - kept).item() ** 2, abs=1e-12)
    least = metrics.insertion_curve(
        model, {"input_ids": ids}, 1, exact, UNK, rank="absolute", most_relevant_first=False
    )
    assert least.logit[0, 1].item() == pytest.approx(row[order[0]].item())  # LERF: least |R| restored first


def test_token_curve_errors():
    model, ids, exact = _bag()
    with pytest.raises(ValueError, match="does not match the ids"):
        metrics.insertion_curve(model, {"input_ids": ids}, 1, exact[:, :3], UNK)
    with pytest.raises(ValueError, match="rank must be"):
        metrics.pruning_curve(model, {"input_ids": ids}, 1, exact, UNK, rank="size")


class PixelCount(torch.nn.Module):
    """logit₁ = the number of pixels whose channels are not all zero, logit₀ = half the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = (x.abs().sum(1) > 0).flatten(1).sum(1).double()
        return torch.stack([torch.full_like(on, x.shape[-1] * x.shape[-2] / 2), on], 1)


def test_pixel_perturbation_removes_floor_p_hw_pixels():
    images = torch.rand(2, 3, 5, 5) + 0.1
    relevance = torch.randn(2, 5, 5)
    curves = metrics.pixel_perturbation(PixelCount(), images, relevance, labels=torch.tensor([1, 0]))
    removed = [math.floor(p * 25 + 1e-9) for p in curves.fractions.tolist()]
    assert removed == [2, 5, 7, 10, 12, 15, 17, 20, 22]
    torch.testing.assert_close(curves.logit, (25 - torch.tensor(removed, dtype=torch.float64)).expand(2, -1))
    expected_top = (25 - torch.tensor(removed) > 12.5).double()  # class 1 while more than half remain
    torch.testing.assert_close(curves.top, expected_top.expand(2, -1))
    torch.testing.assert_close(curves.target[1], 1 - expected_top)  # sample 1's label is 0
    assert curves.auc("top") == pytest.approx(torch.trapezoid(expected_top, curves.fractions).item())


def test_positive_and_negative_tests_pick_opposite_pixels():
    class Weighted(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            s = (x.sum(1) * self.w).flatten(1).sum(1)
            return torch.stack([torch.zeros_like(s), s], 1)

    w = torch.arange(16.0).reshape(4, 4)
    images = torch.ones(1, 2, 4, 4)
    pos = metrics.pixel_perturbation(Weighted(w), images, w[None], test="positive", fractions=[0.25])
    neg = metrics.pixel_perturbation(Weighted(w), images, w[None], test="negative", fractions=[0.25])
    assert pos.logit.item() == 2 * (w.sum() - (15 + 14 + 13 + 12)).item()  # the 4 largest pixels gone
    assert neg.logit.item() == 2 * (w.sum() - (0 + 1 + 2 + 3)).item()
    mean = metrics.pixel_perturbation(Weighted(w), images * 3, w[None], fill="mean", fractions=[0.5])
    assert mean.logit.item() == 2 * 3 * w.sum().item()  # a constant image's mean is itself


def test_gaussian_blur_keeps_constants_and_sums():
    flat = torch.full((1, 3, 9, 9), 0.7, dtype=torch.float64)
    torch.testing.assert_close(metrics.gaussian_blur(flat), flat)
    point = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    point[0, 0, 10, 10] = 1.0
    blurred = metrics.gaussian_blur(point, kernel=5, sigma=1.0)
    assert blurred.sum().item() == pytest.approx(1.0) and blurred[0, 0, 10, 10] == blurred.max()


class Channels(torch.nn.Module):
    """logit_c = mean of channel c: image c (channel c lit) is class c; a mosaic lights a quarter of each."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.mean((2, 3))


def _oracle(model, inputs, target):
    """The exact relevance of the linear model: x ⊙ ∂logit_y/∂x, i.e. channel y of the input."""
    x = inputs["pixel_values"]
    keep = torch.zeros_like(x)
    keep[torch.arange(x.shape[0]), torch.as_tensor(target)] = 1
    return x * keep


def _uniform(model, inputs, target):
    return torch.ones_like(inputs["pixel_values"])


def _lit(n: int = 4, size: int = 8) -> torch.Tensor:
    images = torch.zeros(n, 4, size, size, dtype=torch.float64)
    for i in range(n):
        images[i, i % 4] = 1.0
    return images


def test_mosaic_layout_and_quadrant_weights():
    quads = torch.arange(4, dtype=torch.float64).reshape(1, 4, 1, 1, 1).expand(1, 4, 1, 4, 4)
    tiled = mosaic(quads)
    assert tiled[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    weights = quadrant_map(torch.tensor([[0.5, -1.0, 0.0, 0.25]]), 4, 4)
    assert weights[0].tolist() == [[0.5, 0.5, -1, -1], [0.5, 1, 1, -1], [0, 1, 1, 0.25], [0, 0, 0.25, 0.25]]


def test_gae_contrastiveness_is_one_for_the_exact_map_and_the_weight_mean_for_a_flat_one():
    model, images, labels = Channels(), _lit(), torch.arange(4)
    exact = metrics.gae(model, images, labels, _oracle, steps=4, generator=torch.Generator().manual_seed(0))
    assert exact.contrastiveness.tolist() == pytest.approx([1.0])
    flat = metrics.gae(model, images, labels, _uniform, steps=4, generator=torch.Generator().manual_seed(0))
    sigma = 2 / math.e - 1  # p⁺(ℓ_q)/p⁺(ℓ⁺) = e⁰/e¹ for the other three quadrants
    pixels = 64
    mean = (16 * 1 + 3 * (15 * sigma + 1)) / pixels  # positive quadrant 1; others σ but their centre pixel 1
    assert flat.contrastiveness.item() == pytest.approx(max(mean, 0.0))
    for result in (exact, flat):
        torch.testing.assert_close(result.gae, result.local_consistency * result.contrastiveness)
        torch.testing.assert_close(result.local_consistency, torch.relu(result.faithfulness + result.robustness) / 2)
        assert bool((result.faithfulness.abs() <= 1).all()) and bool((result.robustness.abs() <= 1).all())
    assert torch.equal(exact.positives, flat.positives)  # same generator, same draws


def test_gae_grouping_reference_differs_only_beyond_four_images():
    model, labels = Channels(), torch.arange(8) % 4
    images = _lit(8)
    images[4:] *= 0.5  # the second group differs from the first
    draw = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    four = [
        metrics.gae(model, images[:4], labels[:4], _oracle, steps=3, generator=draw(), grouping=g)
        for g in ("consistent", "reference")
    ]
    torch.testing.assert_close(four[0].gae, four[1].gae)
    eight = [
        metrics.gae(model, images, labels, _oracle, steps=3, generator=draw(), grouping=g)
        for g in ("consistent", "reference")
    ]
    assert not torch.allclose(eight[0].contrastiveness, eight[1].contrastiveness)
    with pytest.raises(ValueError, match="multiple of 4"):
        metrics.gae(model, images[:3], labels[:3], _oracle)


def test_gae_runs_lrpgraph_presets_without_touching_the_model():
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 64, 5)
    ).eval()
    images = torch.rand(8, 3, 8, 8)
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    result = metrics.gae(cnn, images, torch.arange(8) % 5, metrics.lrp("abslrp", contrastive=True), key="input")
    assert result.gae.shape == (2,) and bool(torch.isfinite(result.gae).all())
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert all(p.grad is None for p in cnn.parameters())
    assert lrpgraph.explain(cnn, images[:1]).relevance["input"].shape == (1, 3, 8, 8)


def test_curves_take_explain_many_results():
    model, ids, _ = _bag()
    ragged = [{"input_ids": ids[0]}, {"input_ids": ids[1, :4]}]
    results = lrpgraph.explain_many(model, ragged, target=1, rules="epsilon")
    padded = torch.stack([ids[0], torch.cat([ids[1, :4], torch.zeros(3, dtype=torch.long)])])
    own = [
        lrpgraph.explain(model, {"input_ids": x["input_ids"][None]}, target=1).relevance["input_ids"] for x in ragged
    ]
    alone = torch.cat([own[0], torch.nn.functional.pad(own[1], (0, 3))])
    from_many = metrics.insertion_curve(model, {"input_ids": padded}, 1, results, UNK)
    from_tensor = metrics.insertion_curve(model, {"input_ids": padded}, 1, alone, UNK)
    torch.testing.assert_close(from_many.logit, from_tensor.logit)
    with pytest.raises(ValueError, match="do not stack to"):
        metrics.insertion_curve(model, {"input_ids": padded[:, :5]}, 1, results, UNK)
