"""absLRP: hand-worked cases of its rules (../shared/REFERENCE-METHODS.md, beside this repository), N1 per op,
strictness, the two-pass contrastive map, and contrastive seeds for the other presets. The module-level reference
is abslrp_reference.py, compared in test_reference_methods.py."""

import warnings

import pytest
import torch
from models import mlp, vgg_like
from reference_models import models
from torch import nn

import lrpgraph
from lrpgraph.tools.zoo import architectures


def n1(r):
    return r / (r.abs().sum(-1, keepdim=True) + 1e-9)


def abs_linear(x, w, b, R):
    """REFERENCE-METHODS.md for one dense layer: N1(Σ_j (x_i w_ij + |x_i||w_ij|) R_j / (|z_j| + 1e-9))."""
    s = R / ((x @ w.T + b).abs() + 1e-9)
    return n1(x * (s @ w) + x.abs() * (s @ w.abs()))


def test_two_layer_relu_net_hand_worked():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    seed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    ex = lrpgraph.explain(net, x, target=seed, rules="abslrp")
    with torch.no_grad():
        pre = net[0](x)
    r_hidden = abs_linear(torch.relu(pre), net[2].weight, net[2].bias, seed)
    r_pre = n1(2 * (pre > 0) * r_hidden)  # ReLU: 2·1[x>0]·R, then N1
    expected = abs_linear(x, net[0].weight, net[0].bias, r_pre)
    torch.testing.assert_close(ex.relevance["input"], expected)
    mass = ex.relevance["input"].abs().sum(-1)
    assert ((mass - 1).abs() < 1e-8).logical_or(mass == 0).all()  # unit mass, or nothing positive to pass on


class Residual(nn.Module):
    def __init__(self, alpha: float):
        super().__init__()
        self.lin, self.alpha = nn.Linear(4, 4), alpha

    def forward(self, x):
        return torch.add(x, self.lin(x), alpha=self.alpha)


@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_a_residual_sum_hand_worked(alpha):
    """y = x + α·b, b = xWᵀ + c computed from x: the shortcut gets the total derivative through the branch,
    N1((x + |x|)·s + x ⊙ J(x)ᵀ[(1 + sign t)·s]) with t = α·b the branch's term and J = αW; t gets N1((t + |t|)·s)
    and hands it on by the layer rule; x adds both shares (a fan-out)."""
    torch.manual_seed(1)
    net = Residual(alpha).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    seed = torch.randn(3, 4, dtype=torch.float64)
    ex = lrpgraph.explain(net, x, target=seed, rules="abslrp")
    with torch.no_grad():
        w, c = net.lin.weight, net.lin.bias
        t = alpha * (x @ w.T + c)
        s = seed / ((x + t).abs() + 1e-9)
        shortcut = n1((x + x.abs()) * s + x * ((((1 + t.sign()) * s) * alpha) @ w))
        branch = abs_linear(x, w, c, n1((t + t.abs()) * s))
    torch.testing.assert_close(ex.relevance["x"], shortcut + branch, atol=1e-14, rtol=1e-12)
    local = n1((x + x.abs()) * s)  # the local add rule: not what the shortcut gets
    assert (ex.relevance["x"] - (local + branch)).abs().max() > 1e-3


def test_the_residual_rule_leaves_the_model_and_its_gradients_alone():
    """The branch is differentiated on detached copies: the model's parameters, their .grad and the tape are as they
    were, even when the caller records gradients."""
    _, vit = models()
    for p in vit.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        ex = lrpgraph.explain(vit, x, target=1, rules="abslrp", contrastive=True)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in vit.parameters()) and x.grad is None
    assert all(torch.equal(v, state[k]) for k, v in vit.state_dict().items())
    assert ex.relevance["x"].grad_fn is None and not ex.relevance["x"].requires_grad


def test_branch_inputs_are_kept_or_recomputed_under_a_memory_budget():
    """What a branch replay reads (the shortcut, weights, statistics) are the step's reads: a budget that drops them
    recomputes them, and the map is the same."""
    _, vit = models()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    free = lrpgraph.explain(vit, x, target=2, rules="abslrp", contrastive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a budget below the smallest schedule says so
        tight = lrpgraph.explain(
            vit, x, target=2, rules="abslrp", contrastive=True, memory_budget=free.stats["peak_activation_bytes"] // 4
        )
    assert tight.stats["recomputed_nodes"] > 0
    torch.testing.assert_close(tight.relevance["x"], free.relevance["x"], atol=1e-13, rtol=0)


def test_products_and_sums_follow_the_rule():
    class Mix(nn.Module):
        def forward(self, a, b):
            return a * b + a

    a = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    ex = lrpgraph.explain(Mix(), (a, b), target=torch.ones(1, 2, dtype=torch.float64), rules="abslrp")
    # the sum a·b + a = [8, −5]: s = R/|y| = [1/8, 1/5]; branch p = a·b = [6, −4] gets N1((p + |p|)·s) = [1, 0], branch
    # a = [2, −1] gets N1([4/8, 0]) = [1, 0]; the product gives both factors N1((z + |z|)·R/|z|) = N1([2, 0]) = [1, 0]
    torch.testing.assert_close(ex.relevance["a"], torch.tensor([[2.0, 0.0]], dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(ex.relevance["b"], torch.tensor([[1.0, 0.0]], dtype=torch.float64), atol=1e-8, rtol=0)


def test_max_pooling_divides_by_nothing():
    pool = nn.MaxPool1d(2)
    x = torch.tensor([[[3.0, -1.0, -2.0, -5.0]]], dtype=torch.float64)
    ex = lrpgraph.explain(pool, x, target=torch.tensor([[[1.0, 1.0]]], dtype=torch.float64), rules="abslrp")
    # windows [3, −1] and [−2, −5]: x routed by argmax x (3 and −2), |x| by argmax |x| (3 and −5):
    # [3·1 + 3·1, 0, −2·1, 5·1] = [6, 0, −2, 5], then N1: / 13
    expected = torch.tensor([[[6.0, 0.0, -2.0, 5.0]]], dtype=torch.float64) / (13 + 1e-9)
    torch.testing.assert_close(ex.relevance["input"], expected)


def test_contrastive_map_is_nmax_of_two_normalised_passes():
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=3, rules="abslrp", contrastive=True)
    with torch.no_grad():
        classes = model(x).shape[-1]
    one_hot = torch.zeros(2, classes, dtype=torch.float64)
    one_hot[:, 3] = 1
    p = lrpgraph.explain(model, x, target=one_hot, rules="abslrp").relevance["input"]
    q = lrpgraph.explain(model, x, target=(1 - one_hot) / (classes - 1), rules="abslrp").relevance["input"]
    difference = (p - q).reshape(2, -1)
    expected = (difference / (difference.abs().amax(-1, keepdim=True) + 1e-9)).reshape(p.shape)
    torch.testing.assert_close(ex.relevance["input"], expected)
    peak = ex.relevance["input"].abs().amax((1, 2, 3))  # 1 up to Nmax's 1e-9 over a small difference
    torch.testing.assert_close(peak, torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    one_pass = lrpgraph.explain(model, x, target=one_hot * (1 + 1 / (classes - 1)) - 1 / (classes - 1), rules="abslrp")
    assert not torch.allclose(one_pass.relevance["input"], ex.relevance["input"])  # N1 at every op: not one pass


@pytest.mark.parametrize("name", ["resnet", "vit", "bert", "llama"])
def test_transformers_and_cnns(name):
    (arch,) = architectures([name])
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, rules="abslrp", contrastive=True)
    for r in ex.relevance.values():
        assert torch.isfinite(r).all() and r.abs().sum() > 0


def test_vgg_input_relevance_has_unit_mass():
    model = vgg_like(batchnorm=True)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=3, rules="abslrp")
    mass = ex.relevance["input"].abs().sum((1, 2, 3))
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), atol=1e-8, rtol=0)
    assert ex.stats["rules"]["batchnorm:abs"] == 3  # batch norm is its own layer for absLRP (not folded)


def test_an_op_abslrp_does_not_cover_is_an_error_naming_it():
    class Combine(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return torch.zeros(4, 3).index_add(0, torch.tensor([0, 2]), self.lin(x))

    with pytest.raises(lrpgraph.MissingRuleError, match=r"scatter.*aten.index_add.default.*in module"):
        lrpgraph.explain(Combine(), torch.randn(2, 3), target=torch.ones(4, 3), rules="abslrp")


def test_contrastive_seed_is_target_minus_mean_of_the_others():
    model = mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    rules = lrpgraph.preset("epsilon", epsilon=1e-12)
    ex = lrpgraph.explain(model, x, target=2, rules=rules, contrastive=True)
    expected_seed = torch.full((3, 4), -1 / 3, dtype=torch.float64)
    expected_seed[:, 2] = 1.0
    torch.testing.assert_close(ex.seed, expected_seed)
    unit = [
        lrpgraph.explain(model, x, target=torch.eye(4, dtype=torch.float64)[c].expand(3, 4), rules=rules)
        for c in range(4)
    ]
    others = sum(unit[c].relevance["input"] for c in (0, 1, 3)) / 3
    torch.testing.assert_close(ex.relevance["input"], unit[2].relevance["input"] - others)


def test_contrastive_seed_for_a_token_target():
    (arch,) = architectures(["llama"])
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, target=5, rules="cp-lrp", contrastive=True)
    seed = ex.seed
    assert seed[:, -1, 5].eq(1).all() and seed[:, -1].sum(-1).abs().max() < 1e-5 and seed[:, :-1].abs().sum() == 0
    with pytest.raises(lrpgraph.TargetError, match="contrastive"):
        lrpgraph.explain(model, inputs, target=lambda o: o, contrastive=True)
