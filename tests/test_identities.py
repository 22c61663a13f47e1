"""Identities from ../shared/RULES.md (beside this repository): LRP-epsilon → gradient × input, and conservation
where it must hold."""

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


class Convs(torch.nn.Module):
    """conv1d, conv3d and transposed convolutions, strided, padded, dilated and grouped."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(2, 4, 3, stride=2, padding=1)
        self.t1 = torch.nn.ConvTranspose1d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.c3 = torch.nn.Conv3d(2, 3, 2, dilation=1, padding=1)
        self.t2 = torch.nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.head = torch.nn.Linear(4 * 8 + 2 * 12 * 6, 3)

    def forward(self, a, b):
        h = torch.relu(self.t1(torch.relu(self.c1(a)))).flatten(1)
        v = torch.relu(self.c3(b))  # [N, 3, 5, 5, 5]
        v = self.t2(v.flatten(2, 3)[:, :, :6, :3]).flatten(1)  # a 2-D transposed conv on a slice: [N, 144]
        return self.head(torch.cat([h, v], 1))


def test_epsilon_on_1d_3d_and_transposed_convolutions_is_gradient_times_input():
    model = Convs().double().eval()
    a = torch.randn(2, 2, 8, dtype=torch.float64)
    b = torch.randn(2, 2, 4, 4, 4, dtype=torch.float64)
    target = torch.tensor([0, 2])
    ex = lrpgraph.explain(model, (a, b), target=target, rules=lrpgraph.preset("epsilon", **TIGHT))
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    model(ar, br)[torch.arange(2), target].sum().backward()
    torch.testing.assert_close(ex.relevance["a"], ar.grad * a, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ex.relevance["b"], br.grad * b, rtol=1e-7, atol=1e-9)
