"""A pointwise f with f(0) ≠ 0 (exp, sigmoid, cos): an input of exactly 0 carries none of the output f(0), so the
identity rule keeps the relevance arriving there (booked under "constants"), as x·∂-based rules give it; and the
explanation is verified (it was not: no gradient times a zero input carries relevance)."""

import pytest
import torch
from test_mamba_lrp import _tiny
from torch import nn

import lrpgraph


class Masked(nn.Module):
    """out = Σ_i w_i·f(x_i·m_i), m a 0/1 mask: f's input is exactly 0 where m_i = 0."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.w = nn.Parameter(torch.tensor([0.5, -1.25, 2.0, 0.75], dtype=torch.float64))
        self.register_buffer("m", torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))

    def forward(self, x):
        return (self.w * self.f(x * self.m)).sum(-1, keepdim=True)


@pytest.mark.parametrize("f", [torch.exp, torch.sigmoid, torch.cos])
def test_relevance_at_a_zero_input_stays_with_f_of_zero(f):
    x = torch.tensor([[0.3, -0.7, -1.1, 0.4]], dtype=torch.float64)
    model = Masked(f).eval()
    ex = lrpgraph.explain(model, x, target=0, rules=lrpgraph.preset("attnlrp", stabilizer=1e-12))
    terms = model.w * f(x * model.m)  # the sum's ε-split hands each term its own value: R = w_i·f(x_i·m_i)
    expected = torch.where(model.m == 1, terms, torch.zeros(()))
    assert torch.allclose(ex.relevance["x"], expected, rtol=1e-10, atol=1e-12)
    kept = float(terms[0, 1] + terms[0, 3])  # w_i·f(0) at the masked inputs
    assert ex.stats["absorbed_by_rule"]["constants at activation:pass"] == pytest.approx(kept, rel=1e-10)
    assert lrpgraph.verify(model, x, target=0, rules="attnlrp").ok


@pytest.mark.parametrize("name", ["mamba2", "bamba"])
def test_chunked_scans_are_verified_under_attnlrp(name):
    """Mamba-2's decay masks are exp of segment sums whose diagonal is exactly 0."""
    torch.manual_seed(0)
    model = _tiny(name).double().eval()
    check = lrpgraph.verify(model, {"input_ids": torch.randint(0, 64, (1, 9))}, target=5, rules="attnlrp")
    assert check.ok and not check.unverified, check
