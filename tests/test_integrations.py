"""lrpgraph inside Quantus and Captum: their own metrics call lrpgraph through `lrpgraph.integrations`.

Numbers are pinned on a bias-free linear model, where LRP's z-rule gives x·w exactly, so the metrics'
values are known by hand: Quantus's faithfulness correlation is 1 and Captum's infidelity is 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from guard import assert_unchanged, snapshot

import lrpgraph
from lrpgraph.errors import InputError, TargetError
from lrpgraph.integrations import LRP, explain_func


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3, bias=False)).eval()


def _cnn() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    ).eval()


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(2)) + 0.1


def _xw(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hand-worked LRP-0 of a bias-free linear model: x_i · w_{t,i}."""
    w = model[1].weight.detach()
    return (x.flatten(1) * w[target]).reshape(x.shape)


def test_explain_func_follows_quantus_convention() -> None:
    model, x = _cnn(), _images()
    y = np.array([0, 2, 1, 2])
    before = snapshot(model)
    a = explain_func(model=model, inputs=x.numpy().astype(np.float64), targets=y, rules="epsilon")
    assert isinstance(a, np.ndarray) and a.shape == x.shape and a.dtype == np.float32
    expected = lrpgraph.explain(model, x, target=torch.tensor(y), rules="epsilon").relevance["input"]
    np.testing.assert_allclose(a, expected.numpy(), rtol=1e-6, atol=1e-7)
    summed = explain_func(model, x.numpy(), y, reduce_axes=(1,))
    np.testing.assert_allclose(summed, expected.sum(1, keepdim=True).numpy(), rtol=1e-6, atol=1e-7)
    assert_unchanged(before, model)


def test_explain_func_bad_targets() -> None:
    with pytest.raises(InputError, match="targets must hold one class per sample"):
        explain_func(_linear(), _images().numpy(), np.array([0, 1]))
    with pytest.raises(InputError, match="inputs must be"):
        explain_func(_linear(), [[1.0]], np.array([0]))


def test_quantus_faithfulness_correlation_is_one_for_exact_lrp() -> None:
    quantus = pytest.importorskip("quantus")
    model, x = _linear(), _images(3)
    y = np.array([0, 1, 2])
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=20, subset_size=4, perturb_baseline=0.0, return_aggregate=False, disable_warnings=True
    )
    scores = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=y,
        explain_func=explain_func,
        explain_func_kwargs={"rules": "epsilon"},
        device="cpu",
    )
    np.testing.assert_allclose(scores, [1.0, 1.0, 1.0], atol=1e-5)


def test_quantus_sparseness_reads_lrpgraph_attributions() -> None:
    quantus = pytest.importorskip("quantus")
    model, x = _cnn(), _images()
    y = np.array([1, 0, 2, 1])
    scores = quantus.Sparseness(normalise=False, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=y, explain_func=explain_func, explain_func_kwargs={"rules": "epsilon"}
    )
    a = lrpgraph.explain(model, x, target=torch.tensor(y)).relevance["input"].abs().flatten(1).double() + 1e-7
    a = a.sort(dim=1).values
    n = a.shape[1]
    k = torch.arange(1, n + 1, dtype=torch.float64)
    gini = ((2 * k - n - 1) * a).sum(1) / (n * a.sum(1))
    np.testing.assert_allclose(scores, gini.numpy(), rtol=1e-5)


def test_captum_style_attribute_matches_explain() -> None:
    model, x = _cnn(), _images()
    before = snapshot(model)
    lrp = LRP(model, rules="epsilon-plus")
    attributions, delta = lrp.attribute(x, target=[0, 1, 2, 0], return_convergence_delta=True)
    ex = lrpgraph.explain(model, x, target=torch.tensor([0, 1, 2, 0]), rules="epsilon-plus")
    torch.testing.assert_close(attributions, ex.relevance["input"])
    out = model(x)[torch.arange(4), torch.tensor([0, 1, 2, 0])]
    torch.testing.assert_close(delta, out.detach() - attributions.flatten(1).sum(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        lrp.attribute(x, target=2), lrpgraph.explain(model, x, 2, "epsilon-plus").relevance["input"]
    )
    assert_unchanged(before, model)


def test_captum_tuple_inputs_extra_args_and_index_targets() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 6, bias=False)
            self.b = torch.nn.Linear(2, 6, bias=False)

        def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
            return ((self.a(x) + self.b(y)) * scale).reshape(-1, 2, 3)

    torch.manual_seed(3)
    model = Two().eval()
    x, y, scale = torch.randn(2, 4), torch.randn(2, 2), 2.0  # a constant factor: all relevance to x and y
    rx, ry = LRP(model, rules="epsilon").attribute((x, y), target=[(0, 1), (1, 2)], additional_forward_args=scale)
    out = model(x, y, scale)
    total = rx.sum(1) + ry.sum(1)
    torch.testing.assert_close(total, torch.stack([out[0, 0, 1], out[1, 1, 2]]).detach(), rtol=1e-4, atol=1e-6)
    w = (model.a.weight.detach() * scale).reshape(2, 3, 4)
    torch.testing.assert_close(rx[0], x[0] * w[0, 1], rtol=1e-4, atol=1e-6)
    with pytest.raises(TargetError, match="one per sample"):
        LRP(model).attribute((x, y), target=[0, 1, 2], additional_forward_args=scale)


def test_captum_infidelity_is_zero_for_exact_lrp() -> None:
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x = _linear(), _images(3)
    target = torch.tensor([2, 0, 1])
    attributions = LRP(model, rules="epsilon").attribute(x, target=target)
    torch.testing.assert_close(attributions, _xw(model, x, target), rtol=1e-5, atol=1e-6)

    @captum_metrics.infidelity_perturb_func_decorator(True)
    def halve_some(inputs: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(4)) > 0.5
        return torch.where(mask, inputs / 2, inputs)

    score = captum_metrics.infidelity(model, halve_some, x, attributions, target=target, n_perturb_samples=5)
    torch.testing.assert_close(score, torch.zeros(3), atol=1e-9, rtol=0)


def test_captum_sensitivity_max_calls_attribute() -> None:
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x = _linear(), _images(2)
    target = torch.tensor([1, 2])
    shift = torch.linspace(-0.05, 0.05, 16).reshape(1, 1, 4, 4)

    def perturb(inputs: torch.Tensor, perturb_radius: float = 0.02) -> torch.Tensor:
        return inputs + shift

    lrp = LRP(model, rules="epsilon")
    score = captum_metrics.sensitivity_max(lrp.attribute, x, perturb_func=perturb, n_perturb_samples=3, target=target)
    a, moved = _xw(model, x, target), _xw(model, x + shift, target)
    expected = (moved - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)
    torch.testing.assert_close(score, expected, rtol=1e-4, atol=1e-6)


def test_captum_noise_tunnel_wraps_lrp() -> None:
    captum_attr = pytest.importorskip("captum.attr")
    model, x = _cnn(), _images(2)
    lrp = LRP(model, rules="epsilon")
    smooth = captum_attr.NoiseTunnel(lrp).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=1)
    torch.testing.assert_close(smooth, lrp.attribute(x, target=1), rtol=1e-5, atol=1e-7)
    noisy = captum_attr.NoiseTunnel(lrp).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=1)
    assert noisy.shape == x.shape and not torch.allclose(noisy, smooth)
