"""Ops without a rule are decomposed at capture by torch's own decomposition table into ops that have rules, recorded
in `ex.stats["decomposed"]`: linear ops (trilinear upsampling, fold/col2im, lerp, and diff, a composite op) give
LRP-0 relevance equal to gradient × input of the whole (bias-free, linear) model, computed here by autograd; addcmul
equals the same arithmetic written out; relevance that can reach no input is an error."""

import pytest
import torch
import torch.nn.functional as F

import lrpgraph

LRP0 = lrpgraph.preset("epsilon", epsilon=0.0)


class Linear(torch.nn.Module):
    """x → a bias-free layer → `op` → two fixed weightings summed: [B, 2], linear in x."""

    def __init__(self, op, features: int, after: tuple):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(features, features, bias=False)
        self.op = op
        self.register_buffer("weights", torch.randn(2, *after))

    def forward(self, x):
        h = self.op(self.layer(x))
        return torch.stack([(h * w).flatten(1).sum(1) for w in self.weights], 1)


CASES = {  # the op decomposed: (what the model applies, input shape, shape after the op)
    "aten.upsample_trilinear3d.vec": (
        lambda h: F.interpolate(h, scale_factor=2, mode="trilinear"),
        (2, 2, 3, 3, 4),
        (2, 6, 6, 8),
    ),
    "aten.col2im.default": (lambda h: F.fold(h, (4, 4), (2, 2)), (2, 4, 9), (1, 4, 4)),
    "aten.lerp.Scalar": (lambda h: torch.lerp(h, 2 * h, 0.3), (2, 3, 4), (3, 4)),
    "aten.diff.default": (lambda h: torch.diff(h, dim=-1), (2, 3, 4), (3, 3)),  # a composite op: torch.export's table
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_decomposed_linear_op_gives_gradient_times_input(name):
    op, shape, after = CASES[name]
    model = Linear(op, shape[-1], after).double().eval()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ex = lrpgraph.explain(model, x, target=1, rules=LRP0)
    assert ex.stats["decomposed"] == {name: 1}
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(leaf)[:, 1].sum(), leaf)
    expected = x * grad
    # equal but for the sum rules' own stabiliser (1e-6 of each sum), which matters more where torch's trilinear
    # decomposition writes v1 + (v2 − v1)·t and v2 ≈ v1
    tolerance = 1e-2 if "trilinear" in name else 1e-4
    assert float((ex.relevance["x"] - expected).abs().max()) <= tolerance * float(expected.abs().max())
    assert lrpgraph.verify(model, x, target=1, rules=LRP0).ok


def test_addcmul_decomposed_equals_the_arithmetic_written_out():
    written = Linear(lambda h: h + 0.5 * h * h, 4, (3, 4)).double().eval()
    fused = Linear(lambda h: torch.addcmul(h, h, h, value=0.5), 4, (3, 4)).double().eval()
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for rules in ("epsilon", "attnlrp"):
        a, b = lrpgraph.explain(fused, x, target=0, rules=rules), lrpgraph.explain(written, x, target=0, rules=rules)
        assert a.stats["decomposed"] == {"aten.addcmul.default": 1} and "decomposed" not in b.stats
        torch.testing.assert_close(a.relevance["x"], b.relevance["x"], rtol=1e-12, atol=1e-14)


def test_relevance_that_reaches_no_input_is_an_error_not_an_empty_result():
    """An EmbeddingBag with a padding index: its op has no rule and torch's decomposition none either for the ids,
    so relevance from the output reaches no input."""

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.bag, self.head = torch.nn.EmbeddingBag(10, 4, mode="sum", padding_idx=0), torch.nn.Linear(4, 2)

        def forward(self, ids):
            return self.head(self.bag(ids))

    with pytest.raises(lrpgraph.MissingRuleError, match="relevance from output 'linear' reaches none of the model's"):
        lrpgraph.explain(Bag().eval(), torch.tensor([[1, 2, 0], [3, 0, 0]]), target=0)


def test_an_op_torch_cannot_decompose_still_names_itself():
    model = Linear(lambda h: torch.logcumsumexp(h, -1), 4, (3, 4)).double().eval()
    with pytest.raises(lrpgraph.MissingRuleError, match=r"aten\.logcumsumexp\.default"):
        lrpgraph.explain(model, torch.randn(2, 3, 4, dtype=torch.float64), target=0)
