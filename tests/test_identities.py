"""Identities from RULES.md: LRP-epsilon → gradient × input, and conservation where it must hold."""

import pytest
import torch
from models import mlp, vgg_like

import lrpgraph

TIGHT = {"epsilon": 1e-12, "stabilizer": 1e-12}


def gradient_times_input(model, x, target):
    xr = x.clone().requires_grad_()
    out = model(xr)
    out[torch.arange(len(x)), target].sum().backward()
    return (xr.grad * x).detach()


@pytest.mark.parametrize("bias", [True, False])
def test_epsilon_on_relu_mlp_is_gradient_times_input(bias):
    model = mlp(bias=bias)
    x = torch.randn(5, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 0])
    ex = lrpgraph.explain(model, x, target=target, rules=lrpgraph.preset("epsilon", **TIGHT))
    torch.testing.assert_close(ex.relevance["input"], gradient_times_input(model, x, target), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_epsilon_on_cnn_is_gradient_times_input(batchnorm):
    model = vgg_like(batchnorm=batchnorm)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    target = torch.tensor([1, 4, 9])
    ex = lrpgraph.explain(model, x, target=target, rules=lrpgraph.preset("epsilon", **TIGHT))
    torch.testing.assert_close(ex.relevance["input"], gradient_times_input(model, x, target), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(
    "name,params",
    [
        ("epsilon", {}),
        ("epsilon-gamma-box", {"low": -1.0, "high": 1.0}),
        ("epsilon-plus-flat", {}),
        ("epsilon-plus", {}),
        ("epsilon-alpha2-beta1", {}),
    ],
)
def test_conservation_without_biases(name, params):
    model = vgg_like(bias=False)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    ex = lrpgraph.explain(model, x, target=torch.tensor([2, 5]), rules=lrpgraph.preset(name, **params, **TIGHT))
    c = ex.conservation
    torch.testing.assert_close(c.input_total, c.seed, rtol=1e-7, atol=1e-12)
    assert abs(c.absorbed.get("bias", 0.0)) < 1e-9


def test_int_target_seeds_the_logit():
    model = mlp()
    x = torch.randn(2, 6, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=3)
    with torch.no_grad():
        logits = model(x)[:, 3]
    torch.testing.assert_close(ex.conservation.seed, logits)
    assert ex.seed[:, :3].abs().sum() == 0
