"""Op classes beyond the zoo: each new rule against the same computation written out in ops that already have
rules (float64, 1e-6), and its conservation identity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lrpgraph


@pytest.fixture(autouse=True)
def float64():
    """Every tensor these tests make is float64; the default is restored for the rest of the suite."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def _relevance(model: nn.Module, x: torch.Tensor, rules: str = "epsilon", target: int = 1) -> lrpgraph.Explanation:
    return lrpgraph.explain(model.double().eval(), x, target=target, rules=rules)


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor, rules: str = "epsilon") -> tuple:
    ra, rb = _relevance(a, x, rules), _relevance(b, x, rules)
    key = next(iter(ra.relevance))
    scale = rb.relevance[key].abs().max()
    assert (ra.relevance[key] - rb.relevance[key]).abs().max() <= 1e-6 * scale
    return ra, rb


class Head(nn.Module):
    """Linear → f → linear head, with f given; the two linears shared between a model and its written-out twin."""

    def __init__(self, f, width: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.head, self.f = nn.Linear(width, width), nn.Linear(width, 3), f

    def forward(self, x):
        return self.head(self.f(self.inner(x)))


def _twins(f, g, width: int = 8) -> tuple[Head, Head]:
    a, b = Head(f, width), Head(g, width)
    b.load_state_dict(a.state_dict())
    return a, b


def test_slice_write_equals_concatenation():
    def written(y):
        z = y.clone()
        z[..., :4] = 2 * y[..., 4:]
        return z

    a, b = _twins(written, lambda y: torch.cat([2 * y[..., 4:], y[..., 4:]], -1))
    _same(a, b, torch.randn(3, 8))


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """The real 8×8 block-diagonal matrix of multiplying 4 complex pairs by e^{iθ}: y = x @ M."""
    m = torch.zeros(8, 8)
    for k, t in enumerate(angles.tolist()):
        c, s = math.cos(t), math.sin(t)
        m[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = torch.tensor([[c, s], [-s, c]])
    return m


def test_complex_rotation_equals_its_real_matrix():
    angles = torch.tensor([0.3, 1.1, 2.0, -0.7])
    frequencies = torch.polar(torch.ones(4), angles)

    def rotate(y):
        c = torch.view_as_complex(y.reshape(*y.shape[:-1], 4, 2).contiguous())
        return torch.view_as_real(c * frequencies).reshape(y.shape)

    matrix = _rotation(angles)
    ra, _ = _same(*_twins(rotate, lambda y: y @ matrix), torch.randn(3, 8))
    seed, absorbed = ra.conservation.seed.sum().item(), sum(ra.conservation.absorbed.values())
    assert ra.conservation.input_total.sum().item() + absorbed == pytest.approx(seed, rel=1e-9)


def test_fourier_transform_equals_the_dft_matrix():
    n = 8
    k = torch.arange(n)
    cosine = torch.cos(2 * math.pi * k[:, None] * k[None, :] / n)  # Re(DFT): FNet keeps the real part
    a, b = _twins(lambda y: torch.fft.fft(y, dim=-1).real, lambda y: y @ cosine)
    _same(a, b, torch.randn(3, n))
    two = _twins(lambda y: torch.fft.fftn(y.reshape(-1, 2, 4), dim=(-2, -1)).real.reshape(-1, 8), lambda y: y)[0]
    ex = _relevance(two, torch.randn(3, 8))
    assert torch.isfinite(ex.relevance["x"]).all()


@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
@pytest.mark.parametrize("n", [16, 15])  # even and odd: with and without a Nyquist frequency
def test_fft_convolution_equals_its_toeplitz_matrix(norm, n):
    """rfft → product with a kernel's spectrum → irfft: a causal convolution (Hyena's long convolutions), which is
    x @ T with T[i, j] = h[j − i]; n ≥ 2·8 − 1, so nothing wraps around."""
    h = torch.randn(8)
    spectrum = torch.fft.rfft(h, n=n)  # under every norm, the round trip's two scales multiply to 1/n

    def through_fourier(y):
        return torch.fft.irfft(torch.fft.rfft(y, n=n, norm=norm) * spectrum, n=n, norm=norm)[..., :8]

    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    toeplitz = torch.where(j >= i, h[(j - i).clamp(min=0)], torch.zeros(()))
    x = torch.randn(3, 8)
    a, b = _twins(through_fourier, lambda y: y @ toeplitz)
    assert torch.allclose(a(x), b(x), atol=1e-12)
    _same(a, b, x, lrpgraph.preset("epsilon", epsilon=1e-12))  # five linear maps: tiny stabilisers agree to 1e-6
    assert lrpgraph.verify(a.double().eval(), x, target=1, rules="epsilon").ok


def test_conjugation_moves_relevance_as_it_is():
    frequencies = torch.polar(torch.ones(4), torch.tensor([0.3, 1.1, 2.0, -0.7]))

    def conjugated(y):
        c = torch.view_as_complex(y.reshape(*y.shape[:-1], 4, 2).contiguous())
        return torch.view_as_real(torch.conj_physical(c) * frequencies).reshape(y.shape)

    flip = torch.diag(torch.tensor([1.0, -1.0] * 4))  # conj on the real pairs: negate each imaginary component
    matrix = flip @ _rotation(torch.tensor([0.3, 1.1, 2.0, -0.7]))
    _same(*_twins(conjugated, lambda y: y @ matrix), torch.randn(3, 8))


def test_selections_and_quantiles_equal_their_written_out_forms():
    def median_gathered(y):
        index = y.argsort(dim=-1, stable=True)[..., 3:4]  # the lower median of 8
        return y - y.gather(-1, index)

    _same(*_twins(lambda y: y - y.median(-1, keepdim=True).values, median_gathered), torch.randn(3, 8))

    def interpolated(y):
        s = y.sort(-1).values
        return y - (0.55 * s[..., 2:3] + 0.45 * s[..., 3:4])  # q = 0.35 of 8 values: position 0.35·7 = 2.45

    _same(*_twins(lambda y: y - torch.quantile(y, 0.35, dim=-1, keepdim=True), interpolated), torch.randn(3, 8))


def test_unfold_equals_concatenated_slices():
    def unfolded(y):
        return nn.functional.unfold(y.reshape(-1, 1, 2, 4), kernel_size=(1, 2)).reshape(-1, 12)[:, :8]

    def sliced(y):
        rows = y.reshape(-1, 2, 4)
        # unfold's columns: for each of the 2×3 windows, its 2 pixels — first channel-row of the kernel, then the next
        left = torch.cat([rows[:, 0, 0:3], rows[:, 1, 0:3]], -1)
        right = torch.cat([rows[:, 0, 1:4], rows[:, 1, 1:4]], -1)
        return torch.cat([left, right], -1)[:, :8]

    x = torch.randn(3, 8)
    a, b = _twins(unfolded, sliced)
    torch.testing.assert_close(a(x), b(x))
    _same(a, b, x)


class HashedIds(nn.Module):
    """Two id columns looked up in one table through per-column offsets (tabular transformers)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table, self.head = nn.Embedding(20, 6), nn.Linear(6, 3)
        self.register_buffer("offsets", torch.tensor([0, 10]))

    def forward(self, ids):
        return self.head(self.table(ids + self.offsets).sum(1))


class SplitTables(nn.Module):
    """The same lookups written out: one table per column."""

    def __init__(self, hashed: HashedIds):
        super().__init__()
        self.first = nn.Embedding.from_pretrained(hashed.table.weight[:10].detach().clone())
        self.second = nn.Embedding.from_pretrained(hashed.table.weight[10:].detach().clone())
        self.head = hashed.head

    def forward(self, ids):
        return self.head(self.first(ids[:, 0]) + self.second(ids[:, 1]))


def test_relevance_follows_ids_through_integer_arithmetic():
    hashed = HashedIds().double().eval()
    ids = torch.tensor([[3, 7], [9, 0], [1, 1]])
    ra, _ = _same(hashed, SplitTables(hashed).double().eval(), ids)
    assert ra.relevance["ids"].abs().sum() > 0
    total = ra.conservation.input_total.sum().item() + sum(ra.conservation.absorbed.values())
    assert total == pytest.approx(ra.conservation.seed.sum().item(), rel=1e-9)


class ClearedIds(nn.Module):
    """Image-token ids (above the table) replaced by 0 under a mask of the ids themselves before the lookup, as
    Gemma 3 does; `written` does it with index_put, else masked_fill; `plain` looks up ids already cleared."""

    def __init__(self, how: str):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head, self.how = nn.Embedding(10, 4), nn.Linear(4, 3), how

    def forward(self, ids):
        if self.how == "written":
            ids = ids.clone()
            ids[ids == 10] = 0
        elif self.how == "filled":
            ids = ids.masked_fill(ids == 10, 0)
        return self.head(self.embed(ids)).sum(1)


def test_relevance_follows_ids_through_a_masked_overwrite():
    ids = torch.tensor([[3, 10, 7], [10, 1, 1]])
    plain = _relevance(ClearedIds("plain").double(), ids.masked_fill(ids == 10, 0), "epsilon")
    for how in ("written", "filled"):
        model = ClearedIds(how).double()
        ex = _relevance(model, ids, "epsilon")  # the cleared positions' relevance lands on the id that was there
        assert torch.allclose(ex.relevance["ids"], plain.relevance["ids"], rtol=1e-12, atol=0), how
        assert lrpgraph.verify(model, ids, rules="epsilon").ok, how


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]):
        super().__init__()
        torch.manual_seed(0)
        self.rnn, self.head = cell(4, 5, batch_first=True), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class HandLSTM(nn.Module):
    """The LSTM written out step by step with the same weights."""

    def __init__(self, fused: Recurrent):
        super().__init__()
        self.fused = fused

    def forward(self, x):
        rnn = self.fused.rnn
        steps = nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0)  # as torch's decomposition orders it
        h = x.new_zeros(x.shape[0], 5)
        c = x.new_zeros(x.shape[0], 5)
        for t in range(x.shape[1]):
            gates = nn.functional.linear(h, rnn.weight_hh_l0, rnn.bias_hh_l0) + steps[:, t]
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.fused.head(h)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_lstm_equals_its_cells_written_out(rules):
    fused = Recurrent(nn.LSTM).double().eval()
    x = torch.randn(2, 3, 4)
    ra = _relevance(fused, x, rules)
    rb = _relevance(HandLSTM(fused), x, rules)
    assert (ra.relevance["x"] - rb.relevance["x"]).abs().max() <= 1e-6 * rb.relevance["x"].abs().max()


def test_gru_explains_with_gates():
    ex = _relevance(Recurrent(nn.GRU), torch.randn(2, 3, 4), "attnlrp")
    assert torch.isfinite(ex.relevance["x"]).all() and ex.relevance["x"].abs().sum() > 0
    assert ex.stats["rules"].get("gate:uniform", 0) > 0  # the update/reset gates are gates


class KwargsCache(nn.Module):
    """A decoder whose forward learns use_cache only through **kwargs (default: its config's True) and then
    returns a cache."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"use_cache": True, "is_decoder": True})()
        self.layer = nn.Linear(4, 3)

    def forward(self, x, **kwargs):
        out = self.layer(x)
        if kwargs.get("use_cache", self.config.use_cache):
            return out, object()  # a cache object no trace can hold
        return out


def test_use_cache_is_switched_off_through_kwargs():
    ex = lrpgraph.explain(KwargsCache().double().eval(), torch.randn(2, 4), target=0)
    assert ex.relevance["x"].shape == (2, 4)


def test_softmax_spelled_out_with_logsumexp_is_the_softmax():
    written = _twins(lambda y: torch.exp(y - torch.logsumexp(y, -1, keepdim=True)), lambda y: y.softmax(-1))
    _same(*written, torch.randn(3, 8), rules="attnlrp")


def test_an_infinite_mask_term_books_no_nan():
    mask = torch.zeros(8)
    mask[5:] = -math.inf
    ex = _relevance(Head(lambda y: (y + mask).softmax(-1) * y), torch.randn(3, 8), rules="attnlrp")
    assert torch.isfinite(ex.relevance["x"]).all()
    assert all(math.isfinite(float(v)) for v in ex.conservation.absorbed.values())
    seed, absorbed = ex.conservation.seed.sum().item(), sum(ex.conservation.absorbed.values())
    assert ex.conservation.input_total.sum().item() + absorbed == pytest.approx(seed, rel=1e-9)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: x scaled by its spatial L2 norm over that norm's channel mean (no bias)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        h = self.inner(x).reshape(-1, 2, 2, 8)
        norm = torch.linalg.vector_norm(h, ord=2, dim=(1, 2), keepdim=True)
        h = 0.5 * (h * (norm / (norm.mean(dim=-1, keepdim=True) + 1e-6))) + h
        return self.head(h.mean((1, 2)))


def test_a_vector_norm_scale_is_held_constant_and_conserves():
    ex = _relevance(GlobalResponseNorm(), torch.randn(12, 8), rules="attnlrp")
    seed = ex.conservation.seed.sum().item()
    assert ex.conservation.input_total.sum().item() == pytest.approx(seed, rel=1e-4)  # no bias, ε = 1e-6
    assert abs(ex.conservation.absorbed.get("rules", 0.0)) <= 1e-4 * abs(seed)


def test_index_put_at_computed_rows_equals_index_add_into_zeros():
    def put(y):
        rows = torch.arange(0, y.shape[0], 2)
        return torch.zeros_like(y).index_put((rows,), 2 * y[rows])

    def add(y):
        rows = torch.arange(0, y.shape[0], 2)
        return torch.zeros_like(y).index_add(0, rows, 2 * y[rows])

    exact = lrpgraph.preset("epsilon", epsilon=1e-12, stabilizer=1e-12)
    a, b = _twins(put, add)
    x = torch.randn(5, 8)
    ra, rb = (lrpgraph.explain(m.double().eval(), x, target=1, rules=exact) for m in (a, b))
    torch.testing.assert_close(ra.relevance["x"], rb.relevance["x"], rtol=1e-9, atol=1e-12)
    assert ra.relevance["x"].abs().sum() > 0


class OverlappingWindows(nn.Module):
    """Longformer's chunking: overlapping windows read by as_strided from a non-contiguous (transposed) view."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.proj = nn.Linear(4, 4, bias=False)
        self.head = nn.Linear(3 * 4 * 4, 2, bias=False)

    def forward(self, x):  # x: [B, 8, 4]
        h = self.proj(x).transpose(1, 2)  # [B, 4, 8], not contiguous
        windows = h.as_strided((h.shape[0], 3, 4, 4), (h.stride(0), 2, h.stride(1), h.stride(2)))
        return self.head(windows.flatten(1))


def test_as_strided_on_a_non_contiguous_view_routes_relevance_where_the_values_came_from():
    """A linear model without biases: epsilon (ε → 0) is gradient × input, computed here by autograd."""
    model, x = OverlappingWindows().double().eval(), torch.randn(2, 8, 4)
    exact = lrpgraph.preset("epsilon", epsilon=1e-300)
    ex = lrpgraph.explain(model, x, target=1, rules=exact)
    leaf = x.clone().requires_grad_()
    model(leaf)[:, 1].sum().backward()
    torch.testing.assert_close(ex.relevance["x"], leaf.detach() * leaf.grad, rtol=1e-10, atol=1e-14)


class RelevantBias(nn.Module):
    """baddbmm(bias, q, kᵀ) whose bias is computed from the input (WavLM's gated position bias)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.q, self.k, self.gate, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):  # x: [B, 5, 4]
        bias = self.gate(x)  # [B, 5, 5]
        scores = torch.baddbmm(bias, self.q(x), self.k(x).transpose(1, 2), beta=0.5, alpha=2.0)
        return self.head(scores.mean(1))


def test_a_bias_that_carries_relevance_gets_its_share_of_a_matrix_product():
    ex = _relevance(RelevantBias(), torch.randn(2, 5, 4), rules="attnlrp", target=0)
    assert lrpgraph.verify(RelevantBias().double().eval(), torch.randn(2, 5, 4), target=0, rules="attnlrp").ok
    bias_share = [n for n in ex.stats["absorbed_by_node"] if n["op"] == "aten.baddbmm.default"]
    seed = abs(ex.conservation.seed.sum().item())
    assert not bias_share or abs(bias_share[0]["absorbed"]) < 1e-3 * seed  # before: the bias's share was kept there


class _HandNorm(torch.nn.Module):
    """A layer norm written out with var or std (the statistic centres x itself), or the fused one."""

    def __init__(self, how: str):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.head = torch.nn.Linear(6, 6).double(), torch.nn.Linear(6, 3).double()
        self.norm = torch.nn.LayerNorm(6, elementwise_affine=False, eps=1e-5).double()
        self.how = how

    def forward(self, x):
        h = self.lin(x)
        if self.how == "fused":
            return self.head(self.norm(h))
        if self.how == "var":
            scale = torch.sqrt(h.var(-1, keepdim=True, unbiased=False) + 1e-5)
        else:
            scale = h.std(-1, keepdim=True, unbiased=False) + 1e-5
        return self.head((h - h.mean(-1, keepdim=True)) / scale)


@pytest.mark.parametrize("how", ["var", "std"])
def test_a_layer_norm_written_with_var_or_std_holds_its_scale(how):
    """(x − μ)/sqrt(var(x) + ε): var centres x itself, so the pass must match the numerator's minuend to the
    statistic's input; the scale is then constant, as in the fused layer norm (which splits the centring by its own
    epsilon rule: 1e-4 apart here, where a scale carrying relevance would be O(1) apart)."""
    x = torch.randn(3, 6, dtype=torch.float64)
    written = lrpgraph.explain(_HandNorm(how).eval(), x, target=1, rules="attnlrp").relevance["x"]
    fused = lrpgraph.explain(_HandNorm("fused").eval(), x, target=1, rules="attnlrp").relevance["x"]
    assert (written - fused).abs().max() <= 1e-3 * fused.abs().max()
    assert lrpgraph.verify(_HandNorm(how).eval(), x, target=1, rules="attnlrp").ok


def test_where_with_a_scalar_side_books_what_reaches_the_constant():
    class Clipped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.lin, self.head = torch.nn.Linear(6, 6).double(), torch.nn.Linear(6, 2).double()

        def forward(self, x):
            h = self.lin(x)
            return self.head(torch.where(h > 0, h, 0.5))

    x = torch.randn(2, 6, dtype=torch.float64)
    ex = lrpgraph.explain(Clipped().eval(), x, target=0, rules="epsilon")
    parts = ex.conservation.where_it_went()  # the inputs and every booked absorption: they sum to the seed
    assert ex.stats["absorbed_by_rule"]["rules at reindex:exact"] != 0.0  # what reached the 0.5s is booked
    assert sum(parts.values()) == pytest.approx(float(ex.seed.sum()), rel=1e-12, abs=1e-14)
    assert lrpgraph.verify(Clipped().eval(), x, target=0, rules="epsilon").ok


class _Broadcast(torch.nn.Module):
    """h + h[:, :1], broadcast by torch.broadcast_tensors first, or by the add itself."""

    def __init__(self, explicit: bool):
        super().__init__()
        torch.manual_seed(2)
        self.lin, self.head = torch.nn.Linear(6, 6).double(), torch.nn.Linear(6, 2).double()
        self.explicit = explicit

    def forward(self, x):
        h = self.lin(x)
        if self.explicit:
            a, b = torch.broadcast_tensors(h, h[:, :1])
            return self.head(a + b)
        return self.head(h + h[:, :1])


def test_broadcast_tensors_sums_each_copy_back():
    x = torch.randn(3, 6, dtype=torch.float64)
    explicit = lrpgraph.explain(_Broadcast(True).eval(), x, target=1, rules="epsilon").relevance["x"]
    implicit = lrpgraph.explain(_Broadcast(False).eval(), x, target=1, rules="epsilon").relevance["x"]
    torch.testing.assert_close(explicit, implicit, rtol=1e-12, atol=1e-14)
    assert lrpgraph.verify(_Broadcast(True).eval(), x, target=1, rules="epsilon").ok


class ImageIntoText(nn.Module):
    """Image features put into a text's embeddings at its image tokens (masked_scatter, as vision-language models
    do), then split with tensor_split and put back in the other order, positions mixed by a linear map: linear and
    without biases, so LRP-0 equals gradient × input."""

    def __init__(self):
        super().__init__()
        self.embed, self.vision = nn.Embedding(20, 6), nn.Linear(5, 6, bias=False)
        self.head, self.mix = nn.Linear(6, 4, bias=False), nn.Linear(5, 1, bias=False)

    def forward(self, ids, image):
        x = self.embed(ids).masked_scatter((ids == 1)[..., None].expand(*ids.shape, 6), self.vision(image))
        return self.after(x)

    def after(self, x):
        first, rest = torch.tensor_split(x, [2], dim=1)
        return self.mix(self.head(torch.cat([rest, first], 1)).transpose(1, 2))[..., 0]


def test_masked_scatter_and_tensor_split_equal_gradient_times_input():
    torch.manual_seed(0)
    model = ImageIntoText().double()
    ids = torch.tensor([[1, 1, 3, 4, 5], [2, 1, 1, 6, 7]])
    image = torch.randn(4, 5, dtype=torch.float64)
    by_op = lrpgraph.coverage(model, (ids, image)).by_op
    assert by_op["aten.masked_scatter.default"] == 1 and by_op["aten.tensor_split.indices"] == 1
    ex = lrpgraph.explain(model, (ids, image), target=2, rules={"linear": {"rule": "epsilon", "epsilon": 0.0}})
    # the reference: autograd on the same model, gradient × input at the image and at the looked-up embeddings
    embedded = model.embed(ids).detach().requires_grad_()
    leaf = image.clone().requires_grad_()
    x = embedded.masked_scatter((ids == 1)[..., None].expand(*ids.shape, 6), model.vision(leaf))
    model.after(x)[:, 2].sum().backward()
    to_ids = (embedded.grad * embedded).sum(-1) * (ids != 1)  # image-token positions hold image features instead
    assert torch.allclose(ex.relevance["image"], leaf.grad * image, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ex.relevance["ids"], to_ids, rtol=1e-10, atol=1e-12)
    assert bool((ex.relevance["image"] != 0).all()) and lrpgraph.verify(model, (ids, image), target=2).ok


class SoftMaximum(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Linear(4, 6, bias=False)

    def forward(self, x):
        return torch.logsumexp(self.inner(x), dim=-1, keepdim=True)


def test_logsumexp_shares_relevance_by_each_terms_exponential():
    model, x = SoftMaximum().double(), torch.randn(3, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=0, rules={"linear": {"rule": "epsilon", "epsilon": 0.0}})
    z = x @ model.inner.weight.detach().T
    y = torch.logsumexp(z, -1, keepdim=True)
    to_z = torch.softmax(z, -1) * y  # R_i = softmax(z)_i · R, R = the logit
    expected = x * ((to_z / z) @ model.inner.weight.detach())  # LRP-0 through the linear layer
    assert torch.allclose(ex.relevance["x"], expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(ex.relevance["x"].sum(-1), y[:, 0], rtol=1e-12)  # conserved
    assert lrpgraph.verify(model, x, target=0, rules="epsilon").ok


class _Rounded(nn.Module):
    """out = Σ_i w_i·f(x_i), f a piecewise-constant rounding."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.w = nn.Parameter(torch.tensor([0.5, -1.25, 2.0, 0.75]))

    def forward(self, x):
        return (self.w * self.f(x)).sum(-1, keepdim=True)


@pytest.mark.parametrize("f", [torch.floor, torch.ceil, torch.round, torch.trunc])
def test_rounding_passes_relevance_like_sign(f):
    """floor, ceil, round and trunc (0 at 0, like sign) pass what reaches them to their input: each input gets its
    term w_i·f(x_i) of the sum (a detector's sampling offsets are floored)."""
    x = torch.tensor([[1.7, -2.3, 0.4, 3.5]])
    model = _Rounded(f).eval()
    ex = lrpgraph.explain(model, x, target=0, rules=lrpgraph.preset("epsilon", stabilizer=1e-12))
    assert torch.allclose(ex.relevance["x"], (model.w * f(x)).detach(), rtol=1e-9, atol=1e-12)
    assert lrpgraph.verify(model, x, target=0, rules="epsilon").ok


class _ScatterReduced(nn.Module):
    """a.scatter_reduce(1, index, b): positions 4 and 5 of a receive no element of b."""

    def __init__(self, reduce: str, include_self: bool):
        super().__init__()
        self.reduce, self.include_self = reduce, include_self
        self.register_buffer("index", torch.tensor([[0, 2, 0, 1, 3, 2, 0, 1]]))

    def forward(self, a, b):
        return a.scatter_reduce(1, self.index, b, self.reduce, include_self=self.include_self)


def _scatter_reduce_reference(a, b, index, R, reduce, include_self):
    """Each output's relevance over the values reduced into it, by loops: in proportion to each term (a mean's
    terms divided by their count) for sum and mean, split evenly among the values equal to it for amax and amin."""
    ra, rb = torch.zeros_like(a), torch.zeros_like(b)
    for p in range(a.shape[1]):
        written = [j for j in range(b.shape[1]) if index[0, j] == p]
        terms = [("a", p, a[0, p])] if include_self or not written else []
        terms += [("b", j, b[0, j]) for j in written]
        values = torch.stack([v for _, _, v in terms])
        if reduce in ("sum", "mean"):
            shares = values / values.sum()
        else:
            out = values.max() if reduce == "amax" else values.min()
            shares = (values == out).double() / (values == out).sum()
        for (name, i, _), share in zip(terms, shares, strict=True):
            (ra if name == "a" else rb)[0, i] += share * R[0, p]
    return ra, rb


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin"])
def test_scatter_reduce_splits_by_terms_or_gives_to_the_winners(reduce, include_self):
    """A byte-level model pools its patches with scatter_reduce: each output's relevance goes to the values reduced
    into it, in proportion to their terms or to the winners (ties share: b holds equal values)."""
    a = torch.tensor([[1.5, 2.0, 1.25, 1.0, 1.75, 1.5]])
    b = torch.tensor([[2.0, 1.5, 1.0, 1.0, 1.25, 1.5, 2.0, 1.75]])
    model = _ScatterReduced(reduce, include_self).eval()
    rules = lrpgraph.preset("epsilon", stabilizer=1e-12)
    for target in range(a.shape[1]):
        ex = lrpgraph.explain(model, (a, b), target=target, rules=rules)
        ra, rb = _scatter_reduce_reference(a, b, model.index, ex.seed, reduce, include_self)
        assert torch.allclose(ex.relevance["a"], ra, rtol=1e-9, atol=1e-12)
        assert torch.allclose(ex.relevance["b"], rb, rtol=1e-9, atol=1e-12)
    assert lrpgraph.verify(model, (a, b), target=2, rules="epsilon").ok


def test_scatter_reduce_product_has_no_rule():
    with pytest.raises(lrpgraph.MissingRuleError, match="reduce='prod'"):
        lrpgraph.explain(_ScatterReduced("prod", True).eval(), (torch.rand(1, 6) + 1, torch.rand(1, 8) + 1), target=0)


class _MaskedWhole(nn.Module):
    """Attention whose second query row is masked whole by an added mask, its NaN probabilities zeroed afterwards
    (Longformer): by −inf, or by float64's lowest value in a softmax taken in float32 (where it is −inf)."""

    def __init__(self, in_float32: bool):
        super().__init__()
        torch.manual_seed(0)
        self.q, self.v, self.in_float32 = nn.Linear(4, 3), nn.Linear(4, 1), in_float32
        self.register_buffer("masked", torch.tensor([[False, True, False]]).unsqueeze(-1))

    def forward(self, x):
        low = torch.finfo(torch.float64).min if self.in_float32 else float("-inf")
        scores = self.q(x) + torch.zeros(()).masked_fill(self.masked, low)
        p = torch.softmax(scores, -1, dtype=torch.float32 if self.in_float32 else None).to(x.dtype)
        p = p.masked_fill(self.masked, 0.0)
        return (p * self.v(x).transpose(-1, -2)).sum(-1)


@pytest.mark.parametrize("in_float32", [False, True])
def test_a_row_masked_whole_passes_nothing_and_verifies(in_float32):
    """A softmax row whose every input is −inf is NaN in the model, zeroed by the model afterwards: it passes no
    relevance (not NaN), and the explanation verifies."""
    model, x = _MaskedWhole(in_float32).eval(), torch.randn(1, 3, 4)
    ex = lrpgraph.explain(model, x, target=0, rules="attnlrp")
    assert torch.isfinite(ex.relevance["x"]).all() and ex.relevance["x"].abs().sum() > 0
    assert lrpgraph.verify(model, x, target=0, rules="attnlrp").ok


class _ComplexProduct(nn.Module):
    """a·b of a = x0 + i·x1 and b = x2 + i·x3, as (real, imaginary); with `spectra`, an autocorrelation of two
    signals by their Fourier transforms (Autoformer): irfft(rfft(q) · conj(rfft(k)))."""

    def __init__(self, spectra: bool = False):
        super().__init__()
        self.spectra = spectra

    def forward(self, x):
        if self.spectra:
            q, k = x[:, :6], x[:, 6:]
            return torch.fft.irfft(torch.fft.rfft(q, dim=1) * torch.conj(torch.fft.rfft(k, dim=1)), n=6, dim=1)
        a, b = torch.view_as_complex(x[:, :2].contiguous()), torch.view_as_complex(x[:, 2:].contiguous())
        return torch.view_as_real(a * b)


@pytest.mark.parametrize("target, expected", [(0, [1.5, 1.0, 1.5, 1.0]), (1, [-0.5, 3.0, 3.0, -0.5])])
def test_a_complex_product_halves_each_real_product(target, expected):
    """(1+2i)(3−i) = 5+5i. Its real part 5 = 1·3 − 2·(−1): the products 3 and 2, each halved between its factors;
    its imaginary part 5 = 1·(−1) + 2·3: the products −1 and 6, halved."""
    x = torch.tensor([[1.0, 2.0, 3.0, -1.0]])
    ex = lrpgraph.explain(_ComplexProduct(), x, target=(0, target), rules="attnlrp")
    assert torch.allclose(ex.relevance["x"], torch.tensor([expected]), rtol=1e-9, atol=1e-12)


def test_an_autocorrelation_by_fourier_transforms_verifies():
    """Two relevant spectra multiplied (one conjugated) and transformed back: explained and verified, conserving."""
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(0))
    model = _ComplexProduct(spectra=True).eval()
    ex = lrpgraph.explain(model, x, target=2, rules=lrpgraph.preset("attnlrp", epsilon=1e-12))
    assert torch.isclose(ex.relevance["x"].sum(), ex.output[0, 2], rtol=1e-9)
    assert lrpgraph.verify(model, x, target=2, rules="attnlrp").ok


class _Cutoff(nn.Module):
    """Gemma 3n's sparsity gate: relu(h − (mean h + c·std h)), a threshold from the statistics of h."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        cut = h.mean(-1, keepdim=True) + 0.5 * torch.std(h, dim=-1, keepdim=True, unbiased=False)
        return self.b(torch.relu(h - cut))


def test_a_standard_deviation_outside_a_normalisation_is_held_constant():
    """A second moment that relevance reaches outside a normalisation scale (a threshold mean + c·std subtracted from
    h) is held constant, as a bias: its term of the sum keeps its share. Written out by hand with the epsilon rule
    (ε = 1e-6, sign-aware) at each sum and linear map: std's share is booked, the mean passes on to h by each h_j's
    part of it. Before, std had no rule (MissingRuleError)."""
    torch.manual_seed(0)
    model = _Cutoff().double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    eps = 1e-6

    def stab(z):
        return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    h = model.a(x)
    mean, std = h.mean(-1, keepdim=True), h.std(-1, keepdim=True, unbiased=False)
    cut = mean + 0.5 * std
    y = torch.relu(h - cut)
    z = model.b(y)
    R = torch.zeros_like(z)
    R[:, 0] = z[:, 0]
    R_y = y * ((R / stab(z)) @ model.b.weight)  # epsilon on b (its bias's share booked)
    s = R_y / stab(h - cut)  # the sum h + (−cut), relu passing R on
    R_h = h * s
    R_cut = (-cut * s).sum(-1, keepdim=True)  # −cut is broadcast over the row: its shares summed back
    R_mean = mean * R_cut / stab(cut)  # cut = mean + ½·std: the std term keeps its share
    R_h = R_h + h / 6 * R_mean / stab(mean)  # mean(h) = Σ h_j / 6: each h_j gets its part
    expected = x * ((R_h / stab(h)) @ model.a.weight)
    ex = lrpgraph.explain(model, x, target=0, rules="epsilon")
    assert torch.allclose(ex.relevance["x"], expected, rtol=1e-9, atol=1e-12)
    assert lrpgraph.verify(model, x, target=0, rules="epsilon").ok
