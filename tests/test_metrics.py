"""Faithfulness metrics on hand-worked cases, bad input, and the baselines."""

import pytest
import torch
from guard import assert_unchanged, snapshot
from torch import nn

import lrpgraph
from lrpgraph import metrics
from lrpgraph.tools.zoo import architectures


class Weighted(nn.Module):
    """score = Σ w·x over 4 'pixels' (an image [B, 1, 1, 4]), two classes (the second is its negative)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, pixel_values):
        s = (pixel_values.flatten(1) * self.w).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)


def test_flipping_fractions():
    assert metrics.flipping_fractions(4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_perturbation_curves_hand_worked():
    model = Weighted([1.0, 2.0, 3.0, 4.0])
    x = torch.ones(1, 1, 1, 4, dtype=torch.float64)
    features = metrics.images(fill=0.0)
    relevance = model.w.detach().reshape(1, 1, 1, 4)  # w·x with x = 1
    curves = metrics.perturbation_curves(model, x, 0, relevance, features, fractions=metrics.flipping_fractions(4))
    # MoRF removes 4, 3, 2, 1: scores 10, 6, 3, 1, 0; LeRF removes 1, 2, 3, 4: 10, 9, 7, 4, 0
    assert curves.morf[0].tolist() == [10.0, 6.0, 3.0, 1.0, 0.0]
    assert curves.lerf[0].tolist() == [10.0, 9.0, 7.0, 4.0, 0.0]
    # trapezoid areas with step 1/4: MoRF (10/2 + 6 + 3 + 1 + 0)/4 = 3.75, LeRF (5 + 9 + 7 + 4)/4 = 6.25
    assert curves.area_morf.item() == pytest.approx(3.75)
    assert curves.area_lerf.item() == pytest.approx(6.25)
    assert curves.abpc.item() == pytest.approx(2.5)
    # AU-MSE: output rows (s, −s) move by (Δ, −Δ): MSE = Δ², Δ = 0, 4, 7, 9, 10 → (0/2 + 16 + 49 + 81 + 100/2)/4
    assert curves.au_mse.item() == pytest.approx((16 + 49 + 81 + 50) / 4)


def test_leave_one_out_of_a_linear_model_agrees_perfectly():
    model = Weighted([1.0, -2.0, 3.0, 0.5])
    x = torch.tensor([[[[2.0, 1.0, -1.0, 4.0]]]], dtype=torch.float64)
    relevance = (model.w.detach() * x.flatten(1)).reshape(x.shape)
    loo = metrics.leave_one_out(model, x, 0, relevance, metrics.images(fill=0.0))
    assert loo.pearson.item() == pytest.approx(1.0) and loo.spearman.item() == pytest.approx(1.0)
    torch.testing.assert_close(loo.drops[0], relevance.flatten(), check_dtype=False)
    reversed_loo = metrics.leave_one_out(model, x, 0, -relevance, metrics.images(fill=0.0))
    assert reversed_loo.spearman.item() == pytest.approx(-1.0)


def test_spearman_ranks_average_ties():
    from lrpgraph.metrics.leave_one_out import ranks

    assert ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]


def test_localisation_hand_worked():
    relevance = torch.tensor([[0.5, -1.0, 2.0, 1.5], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 0]])
    loc = metrics.localisation(relevance, mask)
    # sample 0: positive mass 0.5 + 2 + 1.5 = 4, inside 3.5 → 0.875; top-2 = {2, 3} both hit; top-1 hits
    # sample 1: mass 1/4; top-1 by stable order is feature 0 (hit)
    torch.testing.assert_close(loc.mass, torch.tensor([0.875, 0.25], dtype=torch.float64))
    assert loc.top_k.tolist() == [1.0, 1.0] and loc.top_1.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="does not match"):
        metrics.localisation(relevance, mask[:, :3])
    with pytest.raises(ValueError, match="at least one"):
        metrics.localisation(relevance, torch.zeros_like(mask))


def test_gini_and_completeness():
    g = metrics.gini(torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(g, torch.tensor([0.75, 0.0, 0.0], dtype=torch.float64))
    err = metrics.completeness_error(torch.tensor([[1.0, 2.0], [0.5, 0.5]]), torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(err, torch.tensor([0.25, 0.0], dtype=torch.float64))


def test_bad_input_gives_clear_errors_or_defined_values():
    constant = Weighted([0.0, 0.0, 0.0, 0.0])
    x = torch.ones(1, 1, 1, 4, dtype=torch.float64)
    features = metrics.images(fill=0.0)
    r = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).reshape(1, 1, 1, 4)
    flat = metrics.perturbation_curves(constant, x, 0, r, features)
    assert flat.abpc.item() == 0.0 and torch.isfinite(flat.morf).all()  # defined: flat curves
    with pytest.raises(ValueError, match="zero"):
        metrics.perturbation_curves(Weighted([1.0, 2.0, 3.0, 4.0]), x, 0, torch.zeros_like(r), features)
    with pytest.raises(ValueError, match="do not vary"):
        metrics.leave_one_out(constant, x, 0, r, features)
    with pytest.raises(ValueError, match="does not fit"):
        metrics.perturbation_curves(constant, x, 0, r[..., :3], features)
    with pytest.raises(ValueError, match="NaN"):
        metrics.perturbation_curves(constant, x, 0, r * float("nan"), features)


def test_baselines_on_a_linear_model():
    model = Weighted([1.0, -2.0, 3.0, 0.5])
    x = torch.tensor([[[[2.0, 1.0, -1.0, 4.0]]]], dtype=torch.float64)
    expected = (model.w.detach() * x.flatten(1)).reshape(x.shape)
    gxi = metrics.gradient_x_input("pixel_values")(model, {"pixel_values": x}, 0)
    ig = metrics.integrated_gradients("pixel_values", steps=4)(model, {"pixel_values": x}, 0)
    torch.testing.assert_close(gxi, expected)
    torch.testing.assert_close(ig, expected)  # linear: IG is exact with any step count
    a = metrics.random_attribution("pixel_values", seed=3)(model, {"pixel_values": x}, 0)
    b = metrics.random_attribution("pixel_values", seed=3)(model, {"pixel_values": x}, 0)
    assert torch.equal(a, b) and a.shape == x.shape


def test_token_metrics_and_baselines_leave_the_model_alone():
    (arch,) = architectures(["bert"])
    model, inputs = arch.build()
    model.train()
    before = snapshot(model)
    features = metrics.tokens(replacement_id=0)
    for attribute in (metrics.lrp("attnlrp"), metrics.gradient_x_input(), metrics.integrated_gradients(steps=3)):
        r = attribute(model, inputs, torch.tensor([1, 2]))
        assert r.shape == inputs["input_ids"].shape
        curves = metrics.perturbation_curves(model, inputs, torch.tensor([1, 2]), r, features)
        assert curves.morf.shape == (2, 11) and torch.isfinite(curves.abpc).all()
    zeroed = metrics.tokens(replacement_id=None)  # zeroed embeddings instead of a replacement id
    loo = metrics.leave_one_out(model, inputs, torch.tensor([1, 2]), r, zeroed)
    assert loo.drops.shape == (2, 8) and torch.isfinite(loo.pearson).all()
    assert_unchanged(before, model)


def test_lrp_attribution_of_tokens_plus_positions():
    (arch,) = architectures(["gpt2"])
    model, inputs = arch.build()
    target = torch.tensor([1, 2])
    ex = lrpgraph.explain(model, inputs, target=target, rules="pa-lrp")
    both = metrics.lrp("pa-lrp", combined=True)(model, inputs, target)
    assert ex.positional.abs().sum() > 0
    torch.testing.assert_close(both, ex.relevance["input_ids"] + ex.positional)
    with pytest.raises(ValueError, match="pa-lrp"):
        metrics.lrp("attnlrp", combined=True)(model, inputs, target)
