"""Hand-worked cases for the rules of layers with weights, and the Norm/winner rules of pooling.

One neuron: x = [1, −2, 3], w = [2, 1, −1], b = 1, so z = 2 − 2 − 3 + 1 = −2; seed R = 4.
Each expected value is worked out in the comment above it.
"""

from fractions import Fraction as F

import pytest
import torch
from torch import nn

import lrpgraph

TINY = 1e-12
TIGHT = lrpgraph.RuleSet(params={"epsilon": TINY, "stabilizer": TINY})


def neuron():
    layer = nn.Linear(3, 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 1.0, -1.0]]))
        layer.bias.fill_(1.0)
    return layer


def relevance(model, x, seed, rule, **params):
    rules = lrpgraph.RuleSet(rules={"linear": {"rule": rule, **params}}, params={})
    return lrpgraph.explain(model, x, target=seed, rules=rules).relevance["input"]


X = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
SEED = torch.tensor([[4.0]], dtype=torch.float64)


def expect(values):
    return torch.tensor([[float(v) for v in values]], dtype=torch.float64)


CASES = {
    # x_i w_i R / z = [2, −2, −3]·4/(−2)
    "epsilon": ({"epsilon": TINY}, [-4, 4, 6]),
    # z⁺ terms x⁺w⁺ = [2, 0, 0] (x⁻w⁻ = 0), d = 2 + b⁺ = 3 → [2, 0, 0]·4/3
    "zplus": ({"stabilizer": TINY}, [F(8, 3), 0, 0]),
    # positive part [2,0,0] over 2 + b⁺ = 3; negative part x⁺w⁻ + x⁻w⁺ = [0, −2, −3] over −5 (b⁻ = 0):
    # 2·[2,0,0]·4/3 − 1·[0,−2,−3]·4/(−5)
    "alphabeta": ({"stabilizer": TINY}, [F(16, 3), F(-8, 5), F(-12, 5)]),
    # z < 0: x⁺ with w + γw⁻ = [2, 1, −1.25] → [2, 0, −3.75], bias b + γb⁻ = 1; x⁻ with w + γw⁺ = [2.5, 1.25, −1]
    # → [0, −2.5, 0]; d = 2 − 3.75 + 1 − 2.5 = −3.25; R = [2, −2.5, −3.75]·4/(−3.25)
    "gamma": ({"gamma": 0.25, "stabilizer": TINY}, [F(-32, 13), F(40, 13), F(60, 13)]),
    # l = −1, h = 2: x w = [2,−2,−3], l w⁺ = [−2,−1,0], h w⁻ = [0,0,−2]; d = −2 − (−3 + 1) − (−2 + 0) = 2
    # R = ([2,−2,−3] − [−2,−1,0] − [0,0,−2])·4/2 = [4,−1,−1]·2
    "zbox": ({"low": -1.0, "high": 2.0, "stabilizer": TINY}, [8, -2, -2]),
    # three inputs feed the output: 4/3 each
    "flat": ({"stabilizer": TINY}, [F(4, 3), F(4, 3), F(4, 3)]),
    # w² = [4, 1, 1], b² = 1: R = w²·4/7
    "wsquare": ({"stabilizer": TINY}, [F(16, 7), F(4, 7), F(4, 7)]),
}


@pytest.mark.parametrize("rule", list(CASES))
def test_linear_rule_hand_worked(rule):
    params, values = CASES[rule]
    torch.testing.assert_close(relevance(neuron(), X, SEED, rule, **params), expect(values), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rule", list(CASES))
def test_same_rule_on_a_1x1_convolution(rule):
    """A 1×1 conv with the neuron's weights is the same map: the conv kernels must give the same numbers."""
    conv = nn.Conv2d(3, 1, 1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 1.0, -1.0]).view(1, 3, 1, 1))
        conv.bias.fill_(1.0)
    params, values = CASES[rule]
    rules = lrpgraph.RuleSet(rules={"conv": {"rule": rule, **params}})
    x = X.view(1, 3, 1, 1)
    ex = lrpgraph.explain(conv, x, target=SEED.view(1, 1, 1, 1), rules=rules)
    torch.testing.assert_close(ex.relevance["input"].view(1, 3), expect(values), rtol=1e-9, atol=1e-9)


def test_epsilon_books_the_bias_share():
    ex = lrpgraph.explain(neuron(), X, target=SEED, rules=lrpgraph.RuleSet(params={"epsilon": TINY}))
    # inputs get −4 + 4 + 6 = 6; the bias gets b·R/z = 1·4/(−2) = −2
    assert ex.conservation.inputs["input"].item() == pytest.approx(6.0)
    assert ex.conservation.absorbed["bias"] == pytest.approx(-2.0)
    assert ex.conservation.seed.item() == pytest.approx(4.0)


def test_epsilon_stabilizer_follows_zennit():
    """stab(z) = z + eps·sign(z) with sign(0) = +1: a zero output passes R·x·w/eps."""
    layer = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0]]))
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    seed = torch.tensor([[2.0]], dtype=torch.float64)
    r = relevance(layer, x, seed, "epsilon", epsilon=0.5)
    # z = 0 → stab = 0.5; R = x·w·2/0.5 = [4, −4]
    torch.testing.assert_close(r, torch.tensor([[4.0, -4.0]], dtype=torch.float64))


def test_the_stabilized_division_writes_into_its_own_buffer_only_where_the_result_fits():
    """divide(r, z) = r / (z ± eps), −0.0 counting as positive, whether it writes into the buffer it made (same shape
    and dtype, no vmap) or allocates (r broadcast beyond z, r of a wider dtype, under vmap: in-place ops there need
    every operand batched like self); epsilon's x ⊙ Aᵀs likewise."""
    from lrpgraph.ops.tensors import divide, writable

    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, generator=g, dtype=torch.float64)
    z[0, :2] = torch.tensor([0.0, -0.0], dtype=torch.float64)
    r = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def expected(r, z):
        return r / (z + torch.where(z >= 0, 0.25, -0.25))  # −0.0 ≥ 0: sign(0) = +1 for both zeros

    assert writable(z.clone(), r)
    assert torch.equal(divide(r, z, 0.25), expected(r, z)) and divide(r, z, 0.25)[0, 1] == r[0, 1] / 0.25
    wide = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    assert not writable(z.clone(), wide) and torch.equal(divide(wide, z, 0.25), expected(wide, z))
    assert not writable(z.float(), r) and torch.equal(divide(r, z.float(), 0.25), expected(r, z.float().double()))
    mapped = torch.func.vmap(lambda one: (divide(one, z, 0.25), torch.tensor(writable(z.clone(), one))))(wide)
    assert torch.equal(mapped[0], expected(wide, z)) and not mapped[1].any()
    layer = nn.Linear(4, 3, bias=False).double()
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    seed = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x)
    r = relevance(layer, x, seed, "epsilon", epsilon=0.25)
    torch.testing.assert_close(r, x * (expected(seed, out) @ layer.weight.detach()), rtol=0, atol=0)


def test_alphabeta_rejects_invalid_parameters():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        relevance(neuron(), X, SEED, "alphabeta", alpha=2.0, beta=2.0)


def test_average_pool_norm_rule():
    # avg of [1, 3] = 2, R = 4: R_i = x_i/2 · 4/2 = [1, 3]
    pool = nn.AvgPool1d(2)
    x = torch.tensor([[[1.0, 3.0]]], dtype=torch.float64)
    ex = lrpgraph.explain(pool, x, target=torch.tensor([[[4.0]]], dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["input"], torch.tensor([[[1.0, 3.0]]], dtype=torch.float64))


def test_adaptive_average_pool_norm_rule():
    # adaptive pool to 1×1 over [[1, 2], [3, 6]] = 3, R = 6: R_i = x_i/4 · 6/3 = x_i/2
    pool = nn.AdaptiveAvgPool2d(1)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]], dtype=torch.float64)
    ex = lrpgraph.explain(pool, x, target=torch.full((1, 1, 1, 1), 6.0, dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["input"], x / 2)


def test_sum_and_mean_norm_rule():
    class Sum(nn.Module):
        def forward(self, x):
            return torch.stack([x.sum(-1), x.mean(-1)], -1)

    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    # sum = 4 with R = 2 → x·2/4 = [0.5, 1.5]; mean = 2 with R = 1 → x/2·1/2 = [0.25, 0.75]
    ex = lrpgraph.explain(Sum(), x, target=torch.tensor([[2.0, 1.0]], dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["x"], torch.tensor([[0.75, 2.25]], dtype=torch.float64))


def test_max_pool_winner_takes_all():
    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[1.0, 5.0], [3.0, 2.0]]]], dtype=torch.float64)
    ex = lrpgraph.explain(pool, x, target=torch.full((1, 1, 1, 1), 7.0, dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["input"], torch.tensor([[[[0.0, 7.0], [0.0, 0.0]]]], dtype=torch.float64))


def test_max_reduction_splits_ties():
    class Max(nn.Module):
        def forward(self, x):
            return x.amax(-1, keepdim=True)

    x = torch.tensor([[4.0, 1.0, 4.0]], dtype=torch.float64)
    ex = lrpgraph.explain(Max(), x, target=torch.tensor([[6.0]], dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["x"], torch.tensor([[3.0, 0.0, 3.0]], dtype=torch.float64))


def test_folded_batchnorm_equals_epsilon_on_the_merged_layer():
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    bn = nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
        bn.weight.copy_(torch.tensor([1.2, 0.7, -0.9]))
        bn.bias.copy_(torch.tensor([0.05, 0.1, -0.2]))
    merged = nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        merged.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        merged.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    seed = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    folded = lrpgraph.explain(nn.Sequential(conv, bn), x, target=seed, rules=TIGHT)
    assert folded.stats["rules"] == {"conv:epsilon": 1}
    b = lrpgraph.explain(merged, x, target=seed, rules=TIGHT).relevance["input"]
    torch.testing.assert_close(folded.relevance["input"], b, rtol=1e-9, atol=1e-12)


def test_batchnorm_on_its_own_is_a_channel_affine_map():
    bn = nn.BatchNorm1d(2).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0]) - bn.eps)
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    # y = (x − μ)/σ·γ + β = [(3−1)/2·2, (1−0)/1·1 + 1] = [2, 2]; epsilon: R_i = x_i·(γ/σ)_i·R_i/y_i
    # = [3·1·2/2, 1·1·2/2] = [3, 1] for R = [2, 2]
    ex = lrpgraph.explain(bn, x, target=torch.tensor([[2.0, 2.0]], dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["input"], torch.tensor([[3.0, 1.0]], dtype=torch.float64))
    passed = lrpgraph.explain(bn, x, target=torch.tensor([[2.0, 2.0]], dtype=torch.float64), rules="epsilon")
    torch.testing.assert_close(passed.relevance["input"], torch.tensor([[2.0, 2.0]], dtype=torch.float64))


class SameConv(nn.Module):
    """padding='same' convolutions, linear and without biases (LRP-0 equals gradient × input)."""

    def __init__(self, kernel: int, dilation: int, shape: tuple[int, ...]):
        super().__init__()
        conv = nn.Conv1d if len(shape) == 1 else nn.Conv2d
        self.conv = conv(3, 4, kernel, padding="same", dilation=dilation, bias=False)
        self.head = nn.Linear(4 * torch.Size(shape).numel(), 2, bias=False)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


@pytest.mark.parametrize("kernel, dilation, shape", [(4, 1, (7,)), (2, 3, (7,)), (4, 1, (6, 5)), (3, 1, (7,))])
def test_same_padding_with_an_even_kernel_pads_the_end(kernel, dilation, shape):
    torch.manual_seed(0)
    model, x = SameConv(kernel, dilation, shape).double(), torch.randn(2, 3, *shape, dtype=torch.float64)
    zero = {"rule": "epsilon", "epsilon": 0.0}
    ex = lrpgraph.explain(model, x, target=1, rules={"linear": zero, "conv": zero})
    leaf = x.clone().requires_grad_()
    model(leaf)[:, 1].sum().backward()
    assert torch.allclose(ex.relevance["x"], leaf.grad * x, rtol=1e-12, atol=1e-15)
    assert lrpgraph.verify(model, x, target=1).ok
