"""aten.einsum gets the rule its equation implies, equal to the same computation written out (1e-10, float64)."""

import pytest
import torch
from torch import nn

import lrpgraph


class Pair(nn.Module):
    """f(a, b) through two linear layers (so both operands carry relevance), then a readout."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.la, self.lb = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, a, b):
        return self.fn(self.la(a), self.lb(b)).flatten(1)


PAIRS = {
    "bmm": (lambda a, b: torch.einsum("bji,bjk->bik", a, b), lambda a, b: a.transpose(1, 2) @ b),
    "transposed": (lambda a, b: torch.einsum("bij,bkj->bik", a, b), lambda a, b: a @ b.transpose(1, 2)),
    "ellipsis": (lambda a, b: torch.einsum("...ij,...kj->...ik", a, b), lambda a, b: a @ b.transpose(-1, -2)),
    "outer": (
        lambda a, b: torch.einsum("bij,bik->bijk", a, b).sum(1),
        lambda a, b: (a[..., None] * b[..., None, :]).sum(1),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_products_of_two_relevant_operands(name, rules):
    einsum, written = PAIRS[name]
    torch.manual_seed(0)
    model = Pair(einsum).double()
    twin = Pair(written).double()
    twin.load_state_dict(model.state_dict())
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    seed = torch.randn(2, model(a, b).shape[1], dtype=torch.float64)
    tight = lrpgraph.preset(rules, epsilon=1e-12, stabilizer=1e-12)
    ex = lrpgraph.explain(model, (a, b), target=seed, rules=tight)
    ref = lrpgraph.explain(twin, (a, b), target=seed, rules=tight)
    for key in ("a", "b"):  # an outer product's terms a_ij·b_ik divide by 2·a_ij·b_ik + ε: 1e-6 where they are tiny
        torch.testing.assert_close(ex.relevance[key], ref.relevance[key], rtol=1e-6, atol=1e-12)


class WithWeight(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.randn(5, 4))

    def forward(self, x):
        return self.fn(x, self.weight)


SINGLE = {
    "linear layer": (lambda x, w: torch.einsum("bti,oi->bto", x, w), lambda x, w: x @ w.T),
    "weight first": (lambda x, w: torch.einsum("oi,bti->bot", w, x), lambda x, w: (x @ w.T).transpose(1, 2)),
    "permutation": (lambda x, w: torch.einsum("bti->tbi", x) @ w.T, lambda x, w: x.permute(1, 0, 2) @ w.T),
    "sum": (lambda x, w: torch.einsum("bti->bi", x) @ w.T, lambda x, w: x.sum(1) @ w.T),
}


@pytest.mark.parametrize("name", list(SINGLE))
@pytest.mark.parametrize("rules", ["epsilon", "epsilon-plus"])
def test_one_relevant_operand(name, rules):
    einsum, written = SINGLE[name]
    torch.manual_seed(0)
    model, twin = WithWeight(einsum).double(), WithWeight(written).double()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    seed = torch.randn_like(model(x))
    ex = lrpgraph.explain(model, x, target=seed, rules=rules)
    ref = lrpgraph.explain(twin, x, target=seed, rules=rules)
    torch.testing.assert_close(ex.relevance["x"], ref.relevance["x"], rtol=1e-10, atol=1e-12)


def test_three_operands_with_an_ellipsis_have_no_rule():
    """Three or more operands are split into two-operand einsums (below) unless the equation has '...'."""

    class Three(nn.Module):
        def forward(self, a, b, c):
            return torch.einsum("...j,jk,kl->...l", a, b, c)

    a = torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(lrpgraph.MissingRuleError, match="3 operands"):
        lrpgraph.explain(Three(), (a, a, a), target=torch.ones(2, 2, dtype=torch.float64))


class _Chain(torch.nn.Module):
    """x·W1·W2 and an outer product of three relevant tensors, as one einsum each or as two-operand einsums."""

    def __init__(self, fused: bool):
        super().__init__()
        torch.manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(6, 5, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
        self.fused = fused

    def forward(self, x):
        if self.fused:
            h = torch.einsum("bi,ij,jk->bk", x, self.w1, self.w2)
            return torch.einsum("bi,bj,bk->bijk", h, h, torch.tanh(h)).flatten(1)
        h = torch.einsum("bj,jk->bk", torch.einsum("bi,ij->bj", x, self.w1), self.w2)
        return torch.einsum("bij,bk->bijk", torch.einsum("bi,bj->bij", h, h), torch.tanh(h)).flatten(1)


@pytest.mark.parametrize("rules", ["epsilon", "attnlrp"])
def test_an_einsum_of_three_operands_is_two_operand_einsums(rules):
    """Contracted left to right, each intermediate keeping what later operands or the output name: the same
    relevance as the model written with two-operand einsums, bit for bit, and verified."""
    x = torch.randn(3, 6, dtype=torch.float64)
    fused = lrpgraph.explain(_Chain(True).eval(), x, target=7, rules=rules).relevance["x"]
    written = lrpgraph.explain(_Chain(False).eval(), x, target=7, rules=rules).relevance["x"]
    assert torch.equal(fused, written) and fused.abs().max() > 0
    assert lrpgraph.verify(_Chain(True).eval(), x, target=7, rules=rules).ok
