"""Re-indexing, elementwise, normalisation and embedding rules: hand-worked values and exact adjoints.

For a re-indexing op the rule is the op's adjoint, so the independent reference is autograd's
vector-Jacobian product of the op (computed here, in the test, never in the library).
"""

import math

import pytest
import torch
from torch import nn

import lrpgraph

TIGHT = lrpgraph.RuleSet(params={"epsilon": 1e-12, "stabilizer": 1e-12})


class Op(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _pad(x):
    return nn.functional.pad(x, (1, 2, 0, 1), value=3.0)


REINDEX = {
    "view": lambda x: x.view(2, 12, 5),
    "flatten": lambda x: x.flatten(1),
    "unflatten": lambda x: x.unflatten(2, (2, 2)),
    "unsqueeze_squeeze": lambda x: x.unsqueeze(1).unsqueeze(-1).squeeze(1).squeeze(-1),
    "permute": lambda x: x.permute(2, 0, 3, 1),
    "transpose": lambda x: x.transpose(1, 3),
    "movedim": lambda x: torch.movedim(x, 1, 3),
    "slice_step": lambda x: x[:, 1:, ::2],
    "narrow": lambda x: x.narrow(2, 1, 2),
    "select": lambda x: x[:, 2],
    "cat": lambda x: torch.cat([x, x[:, :1]], dim=1),
    "stack": lambda x: torch.stack([x, x.flip(0)], dim=2),
    "split": lambda x: torch.split(x, [1, 2], dim=1)[1],
    "chunk": lambda x: x.chunk(2, dim=3)[1],
    "unbind": lambda x: x.unbind(1)[2],
    "expand": lambda x: x[:, :1].expand(2, 4, 4, 5),
    "repeat": lambda x: x.repeat(1, 2, 1, 1),
    "index": lambda x: x[:, torch.tensor([2, 0, 2])],
    "index_select": lambda x: torch.index_select(x, 3, torch.tensor([4, 4, 1])),
    "gather": lambda x: torch.gather(x, 3, torch.tensor([[[[0, 4, 4]]]]).expand(2, 3, 4, 3)),
    "roll": lambda x: torch.roll(x, shifts=(1, -2), dims=(1, 3)),
    "flip": lambda x: x.flip(2, 3),
    "pad": _pad,
    "where": lambda x: torch.where(x > 0, x, x.flip(0)),
    "masked_fill": lambda x: x.masked_fill(torch.arange(5) > 2, 7.0),
    "tril": lambda x: x.tril(),
    "unfold": lambda x: x.unfold(3, 2, 1),
    "diagonal": lambda x: torch.diagonal(x, 0, 2, 3),
    "pixel_shuffle": lambda x: nn.functional.pixel_shuffle(x[:, :, :4, :4].repeat(1, 4, 1, 1), 2),
    "contiguous": lambda x: x.transpose(2, 3).contiguous(),
}


@pytest.mark.parametrize("name", list(REINDEX))
def test_reindex_rule_is_the_adjoint(name):
    fn = REINDEX[name]
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        out = fn(x)
    seed = torch.randn_like(out)
    ex = lrpgraph.explain(Op(fn), x, target=seed, rules=TIGHT)
    xr = x.clone().requires_grad_()
    expected = torch.autograd.grad(fn(xr), xr, seed)[0]
    torch.testing.assert_close(ex.relevance["x"], expected, rtol=1e-9, atol=1e-12)


def test_casts_hand_relevance_on_unchanged():
    """A float32 round trip must not round the relevance (autograd's VJP would)."""
    x = torch.randn(2, 3, dtype=torch.float64)
    seed = torch.randn(2, 3, dtype=torch.float64)
    ex = lrpgraph.explain(Op(lambda x: x.float().double()), x, target=seed, rules=TIGHT)
    assert torch.equal(ex.relevance["x"], seed)


def test_reindex_conserves_when_nothing_is_dropped():
    fn = REINDEX["permute"]
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ex = lrpgraph.explain(Op(fn), x, target=torch.randn(4, 2, 5, 3, dtype=torch.float64), rules=TIGHT)
    assert ex.conservation.input_total.sum().item() == pytest.approx(ex.conservation.seed.sum().item(), rel=1e-12)


class Pair(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.scale = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))

    def forward(self, a, b):
        return self.fn(self, a, b)


def explain_pair(fn, a, b, seed):
    ex = lrpgraph.explain(Pair(fn), (a, b), target=seed, rules=TIGHT)
    return ex.relevance["a"], ex.relevance["b"], ex


def t(*values):
    return torch.tensor([list(values)], dtype=torch.float64)


def test_add_splits_in_proportion():
    # a + b = 1 + 3 = 4, R = 8: R_a = 1·8/4 = 2, R_b = 3·8/4 = 6
    ra, rb, _ = explain_pair(lambda m, a, b: a + b, t(1.0), t(3.0), t(8.0))
    assert (ra.item(), rb.item()) == pytest.approx((2.0, 6.0))


def test_sub_splits_with_the_sign():
    # a − b = 5 − 2 = 3, R = 6: R_a = 5·6/3 = 10, R_b = −2·6/3 = −4
    ra, rb, _ = explain_pair(lambda m, a, b: a - b, t(5.0), t(2.0), t(6.0))
    assert (ra.item(), rb.item()) == pytest.approx((10.0, -4.0))


def test_add_with_parameter_keeps_its_share_as_bias():
    # a + 2 (a parameter) with a = 2: out 4, R = 4 → R_a = 2, the parameter absorbs 2
    ra, _rb, ex = explain_pair(lambda m, a, b: a + m.scale + 0 * b, t(2.0), t(1.0), t(4.0))
    assert ra.item() == pytest.approx(2.0)
    assert ex.conservation.absorbed["bias"] == pytest.approx(2.0)


def test_product_of_two_relevant_tensors_splits_uniformly():
    # a·b: each factor gets R/2
    ra, rb, _ = explain_pair(lambda m, a, b: a * b, t(2.0, 3.0), t(5.0, -1.0), t(10.0, -3.0))
    torch.testing.assert_close(ra, t(5.0, -1.5))
    torch.testing.assert_close(rb, t(5.0, -1.5))


def test_product_with_constant_goes_to_the_relevant_factor():
    ra, _rb, _ = explain_pair(lambda m, a, b: a * m.scale * 3.0 + 0 * b, t(2.0), t(1.0), t(12.0))
    assert ra.item() == pytest.approx(12.0)


def test_quotient_goes_to_the_numerator():
    ra, rb, _ = explain_pair(lambda m, a, b: a / b, t(6.0), t(2.0), t(3.0))
    assert (ra.item(), rb.item()) == pytest.approx((3.0, 0.0))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.Tanh(), nn.Sigmoid(), nn.SiLU(), nn.ELU(), nn.Softplus()])
def test_pointwise_nonlinearity_passes_relevance(act):
    x = torch.randn(2, 5, dtype=torch.float64)
    seed = torch.randn(2, 5, dtype=torch.float64)
    ex = lrpgraph.explain(act, x, target=seed, rules=TIGHT)
    torch.testing.assert_close(ex.relevance["input"], seed)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x * torch.sigmoid(x),
        lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
        lambda x: x * torch.tanh(nn.functional.softplus(x)),
    ],
    ids=["silu_written_out", "gelu_tanh_written_out", "mish_written_out"],
)
def test_written_out_activation_is_one_pointwise_region(fn):
    x = torch.randn(2, 6, dtype=torch.float64)
    seed = torch.randn(2, 6, dtype=torch.float64)
    ex = lrpgraph.explain(Op(fn), x, target=seed, rules=TIGHT)
    torch.testing.assert_close(ex.relevance["x"], seed)


class RMSNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))

    def forward(self, x):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.weight * h.to(x.dtype)


def test_written_out_rms_norm_scale_is_a_constant():
    # scale held constant: x·s·w is linear in x with no bias, so every input keeps its own relevance
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    seed = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    ex = lrpgraph.explain(RMSNorm(), x, target=seed, rules=TIGHT)
    torch.testing.assert_close(ex.relevance["x"], seed)


class HandLayerNorm(nn.Module):
    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12)


def layer_norm_reference(x, w, b, R):
    """../shared/RULES.md (beside this repository): g = R/y·w/std, R_x = x ⊙ (g − mean(g)), worked with plain floats."""
    n = len(x)
    mu = sum(x) / n
    std = math.sqrt(sum((v - mu) ** 2 for v in x) / n)
    y = [(v - mu) / std * wi + bi for v, wi, bi in zip(x, w, b, strict=True)]
    g = [r / yi * wi / std for r, yi, wi in zip(R, y, w, strict=True)]
    gm = sum(g) / n
    return [v * (gi - gm) for v, gi in zip(x, g, strict=True)]


def test_layer_norm_rule_hand_worked():
    x, w, b, R = [0.0, 1.0, 5.0], [1.0, 2.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]
    ln = nn.LayerNorm(3, eps=0.0).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor(w))
        ln.bias.copy_(torch.tensor(b))
    ex = lrpgraph.explain(
        ln, torch.tensor([x], dtype=torch.float64), target=torch.tensor([R], dtype=torch.float64), rules=TIGHT
    )
    torch.testing.assert_close(
        ex.relevance["input"], torch.tensor([layer_norm_reference(x, w, b, R)], dtype=torch.float64)
    )


def test_written_out_layer_norm_matches_the_layer_norm_rule():
    x = torch.randn(2, 7, dtype=torch.float64)
    seed = torch.randn(2, 7, dtype=torch.float64)
    ln = nn.LayerNorm(7, eps=1e-12, elementwise_affine=False).double()
    a = lrpgraph.explain(ln, x, target=seed, rules=TIGHT).relevance["input"]
    b = lrpgraph.explain(HandLayerNorm(), x, target=seed, rules=TIGHT).relevance["x"]
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert a.sum().item() == pytest.approx(seed.sum().item(), rel=1e-9)


def test_group_norm_conserves_without_affine():
    gn = nn.GroupNorm(2, 4, affine=False, eps=1e-12).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    seed = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    ex = lrpgraph.explain(gn, x, target=seed, rules=TIGHT)
    torch.testing.assert_close(ex.conservation.input_total, ex.conservation.seed, rtol=1e-8, atol=1e-10)


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3).double()
        self.pos = nn.Embedding(4, 3).double()

    def forward(self, ids):
        positions = torch.arange(ids.shape[1])
        return self.emb(ids) + self.pos(positions)


def test_embedding_relevance_is_per_token():
    model = Embed()
    ids = torch.tensor([[2, 0, 4, 2]])
    with torch.no_grad():
        tok = model.emb(ids)
        out = model(ids)
    seed = torch.randn_like(out)
    ex = lrpgraph.explain(model, ids, target=seed, rules=TIGHT)
    # the position table is a constant: the token share of each add is tok/out·R, summed over the hidden dim
    expected = (tok / out * seed).sum(-1)
    assert ex.relevance["ids"].shape == ids.shape
    torch.testing.assert_close(ex.relevance["ids"], expected)
    assert ex.conservation.absorbed["constants"] == pytest.approx(float((seed - tok / out * seed).sum()))


def test_cumsum_norm_rule():
    # cumsum [1, 2, 3] = [1, 3, 6] with R = [1, 3, 6]: s = R/y = [1, 1, 1], Aᵀs = [3, 2, 1] → x ⊙ Aᵀs = [3, 4, 3]
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    ex = lrpgraph.explain(
        Op(lambda x: x.cumsum(-1)), x, target=torch.tensor([[1.0, 3.0, 6.0]], dtype=torch.float64), rules=TIGHT
    )
    torch.testing.assert_close(ex.relevance["x"], torch.tensor([[3.0, 4.0, 3.0]], dtype=torch.float64))


def test_index_add_splits_shares_where_writes_add_up():
    # out[0] = base 1 + src 2 + src 5 = 8 with R = 16: shares 2, 4, 10; out[1] = 3 (base only) keeps R
    class Combine(nn.Module):
        def forward(self, base, src):
            return base.index_add(0, torch.tensor([0, 0]), src)

    base, src = torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([2.0, 5.0], dtype=torch.float64)
    ex = lrpgraph.explain(Combine(), (base, src), target=torch.tensor([16.0, 6.0], dtype=torch.float64), rules=TIGHT)
    torch.testing.assert_close(ex.relevance["base"], torch.tensor([2.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["src"], torch.tensor([4.0, 10.0], dtype=torch.float64))


def test_scatter_overwrites_move_relevance():
    class Write(nn.Module):
        def forward(self, base, src):
            return base.scatter(0, torch.tensor([2, 0]), src)

    base, src = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([7.0, 8.0], dtype=torch.float64)
    ex = lrpgraph.explain(
        Write(), (base, src), target=torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64), rules=TIGHT
    )
    torch.testing.assert_close(ex.relevance["base"], torch.tensor([0.0, 20.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["src"], torch.tensor([30.0, 10.0], dtype=torch.float64))


@pytest.mark.parametrize("method,gate_share", [("attnlrp", 0.5), ("cp-lrp", 0.0)])
def test_glu_is_a_gate(method, gate_share):
    x = torch.randn(2, 6, dtype=torch.float64)
    seed = torch.randn(2, 3, dtype=torch.float64)
    ex = lrpgraph.explain(
        Op(lambda x: nn.functional.glu(x, -1)),
        x,
        target=seed,
        rules=lrpgraph.preset(method, epsilon=1e-12, stabilizer=1e-12),
    )
    torch.testing.assert_close(ex.relevance["x"], torch.cat([seed * (1 - gate_share), seed * gate_share], -1))


def test_upsampling_rules():
    x = torch.rand(1, 2, 3, 3, dtype=torch.float64) + 0.5
    nearest = Op(lambda x: nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    seed = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    ex = lrpgraph.explain(nearest, x, target=seed, rules=TIGHT)
    xr = x.clone().requires_grad_()
    expected = torch.autograd.grad(nearest(xr), xr, seed)[0]  # re-indexing: relevance is the adjoint
    torch.testing.assert_close(ex.relevance["x"], expected)
    bilinear = Op(lambda x: nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    ex = lrpgraph.explain(bilinear, x, target=seed, rules=TIGHT)
    assert ex.relevance["x"].sum().item() == pytest.approx(seed.sum().item(), rel=1e-9)  # Norm conserves


def test_log_softmax_keeps_the_normaliser_share():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    out = torch.log_softmax(x, -1)
    seed = torch.tensor([[3.0, 5.0]], dtype=torch.float64)
    ex = lrpgraph.explain(Op(lambda x: torch.log_softmax(x, -1)), x, target=seed, rules=TIGHT)
    torch.testing.assert_close(ex.relevance["x"], x / out * seed)


def test_elementwise_maximum_and_minimum_give_the_winner_all():
    class MaxMin(nn.Module):
        def forward(self, a, b):
            return torch.maximum(a, b) + torch.minimum(a, 2 * b)

    a = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, 1.0, 3.0]], dtype=torch.float64)
    ex = lrpgraph.explain(MaxMin(), (a, b), target=torch.ones(1, 3, dtype=torch.float64), rules=TIGHT)
    # the sum splits R = 1 by max = [1, 1, 3] and min = [1, −2, 3] over [2, −1, 6]: [.5, −1, .5] and [.5, 2, .5];
    # max: a wins, b wins, tie (halves); min against 2b = [1, 2, 6]: tie, a wins, a wins
    torch.testing.assert_close(ex.relevance["a"], torch.tensor([[0.75, 2.0, 0.75]], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["b"], torch.tensor([[0.25, -1.0, 0.25]], dtype=torch.float64))


class UnrolledScan(nn.Module):
    """h_t = h_{t−1}/2 + x[:, t] W, looped in Python: the trace unrolls it into one select of x per step."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 4)
        states = []
        for t in range(x.shape[1]):
            h = 0.5 * h + x[:, t] @ self.w
            states.append(h)
        return torch.stack(states, 1)


def test_an_unrolled_loop_reads_its_steps_through_one_unbind():
    torch.manual_seed(0)
    model = UnrolledScan()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    seed = torch.randn(2, 6, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=seed, rules=TIGHT)
    # linear without bias: the epsilon rule with ε → 0 is x ⊙ Jᵀ(seed / y), computed here with autograd
    xr = x.clone().requires_grad_()
    y = model(xr)
    (g,) = torch.autograd.grad(y, xr, seed / y)
    torch.testing.assert_close(ex.relevance["x"], x * g)
    targets = [n.target for n in lrpgraph.trace(model, x).module.graph.nodes]
    assert targets.count(torch.ops.aten.unbind.int) == 1  # the six steps' x[:, t] (slices of all removed)
    assert torch.ops.aten.select.int not in targets and torch.ops.aten.slice.Tensor not in targets


class UnrolledOverIds(nn.Module):
    """The same scan over embedded ids: the length is asked symbolic (an id dimension) and the loop fixes it, so the
    selected tensors' sizes are symbols the trace later learnt to be T."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 3, dtype=torch.float64)
        self.scan = UnrolledScan()

    def forward(self, ids):
        return self.scan(self.embed(ids))


def test_an_unrolled_loop_over_a_length_the_trace_fixed_late_reads_one_unbind():
    torch.manual_seed(0)
    model = UnrolledOverIds()
    ids = torch.randint(0, 10, (2, 6))
    seed = torch.randn(2, 6, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, {"ids": ids}, target=seed, rules=TIGHT)
    x = model.embed(ids).detach().requires_grad_()
    y = model.scan(x)
    (g,) = torch.autograd.grad(y, x, seed / y)
    torch.testing.assert_close(ex.relevance["ids"], (x * g).sum(-1).detach())
    targets = [n.target for n in lrpgraph.trace(model, {"ids": ids}).module.graph.nodes]
    assert targets.count(torch.ops.aten.unbind.int) == 1 and torch.ops.aten.select.int not in targets
