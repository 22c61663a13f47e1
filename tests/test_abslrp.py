"""absLRP: hand-worked on a 2-layer ReLU net, unit normalisation, CNNs and transformers, strictness,
and contrastive seeds (for every preset)."""

import pytest
import torch
from models import mlp, vgg_like
from torch import nn

import lrpgraph
from lrpgraph.tools.zoo import architectures

EPS = 1e-12


def abs_rule(x, w, b, R):
    """RULES.md for one dense layer, written out: R_i = Σ_j (z_ij + |z_ij|)/(|z|_j + eps)·R_j, then Σ|R| = 1."""
    z = x[:, :, None] * w.T[None]  # [batch, in, out]
    total = (x.abs()[:, :, None] * w.abs().T[None]).sum(1) + b.abs()[None]
    r = ((z + z.abs()) / (total[:, None, :] + EPS) * R[:, None, :]).sum(-1)
    return r / r.abs().sum(-1, keepdim=True).clamp_min(1e-300)


def test_two_layer_relu_net_hand_worked():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    seed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    ex = lrpgraph.explain(net, x, target=seed, rules=lrpgraph.preset("abslrp", epsilon=EPS))
    with torch.no_grad():
        h = torch.relu(net[0](x))
    r_hidden = abs_rule(h, net[2].weight, net[2].bias, seed)
    expected = abs_rule(x, net[0].weight, net[0].bias, r_hidden)  # the ReLU passes relevance on
    torch.testing.assert_close(ex.relevance["input"], expected)
    mass = ex.relevance["input"].abs().sum(-1)
    assert ((mass - 1).abs() < 1e-12).logical_or(mass == 0).all()  # unit mass, or nothing positive to pass on


def test_products_and_sums_follow_the_rule():
    class Mix(nn.Module):
        def forward(self, a, b):
            return a * b + a

    a = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    ex = lrpgraph.explain(
        Mix(), (a, b), target=torch.ones(1, 2, dtype=torch.float64), rules=lrpgraph.preset("abslrp", epsilon=EPS)
    )
    # sum: branches p = a·b = [6, −4] and a = [2, −1], |total| = [8, 5]: (t + |t|)/|total| → p: [1.5, 0], a: [0.5, 0],
    # each normalised: p → [1, 0], a → [1, 0]; the product gives both factors (z+|z|)/|z|·R = [2, 0] → [1, 0]
    torch.testing.assert_close(ex.relevance["a"], torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["b"], torch.tensor([[1.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("name", ["resnet", "vit", "bert", "llama"])
def test_transformers_and_cnns(name):
    (arch,) = architectures([name])
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, rules="abslrp", contrastive=True)
    for r in ex.relevance.values():
        assert torch.isfinite(r).all() and r.abs().sum() > 0


def test_vgg_input_relevance_has_unit_mass():
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=3, rules="abslrp", contrastive=True)
    torch.testing.assert_close(ex.relevance["input"].abs().sum((1, 2, 3)), torch.ones(2, dtype=torch.float64))


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
