"""Attention written out with an additive −inf mask (torch.nn.MultiheadAttention computing its weights: baddbmm,
softmax, bmm) explains as the fused path does, and NaN the model computes inside is an error, not a silent NaN."""

import pytest
import torch

import lrpgraph
from lrpgraph.errors import InputError


class Attend(torch.nn.Module):
    """Embed, attend (optionally returning the weights: the written-out path), read the last position."""

    def __init__(self, weights: bool):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(4, 8)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)
        self.weights = weights

    def forward(self, x, mask=None, padding=None):
        h = self.embed(x)
        a, _ = self.attention(h, h, h, attn_mask=mask, key_padding_mask=padding, need_weights=self.weights)
        return self.head(a[:, -1])


X = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
CAUSAL = torch.ones(5, 5, dtype=torch.bool).triu(1)
PADDING = torch.tensor([[False] * 5, [True, True] + [False] * 3])


@pytest.mark.parametrize("rules", ["epsilon", "attnlrp"])
@pytest.mark.parametrize("masks", [{"mask": CAUSAL}, {"padding": PADDING}])
def test_written_out_attention_with_a_boolean_mask_equals_the_fused_path(rules, masks):
    written, fused = Attend(weights=True).double().eval(), Attend(weights=False).double().eval()
    a = lrpgraph.explain(written, {"x": X, **masks}, target=1, rules=rules)
    b = lrpgraph.explain(fused, {"x": X, **masks}, target=1, rules=rules)
    assert torch.isfinite(a.relevance["x"]).all()
    # equal but for the stabilizer (1e-6) of the written-out path's extra epsilon split at the mask's sum
    scale = float(b.relevance["x"].abs().max())
    torch.testing.assert_close(a.relevance["x"], b.relevance["x"], rtol=0, atol=1e-5 * scale)
    assert lrpgraph.verify(written, {"x": X, **masks}, target=1, rules=rules).ok  # the autograd replay agrees


def test_nan_computed_inside_is_an_error_or_with_strict_false_a_warning():
    """Causal mask and padding together leave sample 1's first query no key: PyTorch's attention makes that row
    NaN, which the output (the last position) never shows, but relevance flows through it."""
    model = Attend(weights=True).double().eval()
    inputs = {"x": X, "mask": CAUSAL, "padding": PADDING}
    assert torch.isfinite(model(**inputs)).all()
    with pytest.raises(InputError, match="relevance reaching input 'x' contains NaN"):
        lrpgraph.explain(model, inputs, target=1, rules="attnlrp")
    with pytest.warns(UserWarning, match="relevance reaching input 'x' contains NaN"):
        ex = lrpgraph.explain(model, inputs, target=1, rules="attnlrp", strict=False)
    assert ex.relevance["x"][1].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [7, 130])
def test_explain_runs_an_exactly_causal_mask_as_is_causal_with_the_same_values(dtype, length):
    """explain's forward calls SDPA with `is_causal` where the traced model materialised exactly the causal mask
    (its table entry's fast forward): the same values as the masked call; any other mask (padding, a window, a
    float mask, queries shorter than keys) is passed on as it is."""
    from lrpgraph.ops.attention import causal_when_lower_triangular
    from lrpgraph.ops.table import facts

    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    assert facts(sdpa).fast_forward is causal_when_lower_triangular
    g = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 4, length, 16, generator=g, dtype=dtype) for _ in range(3))
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    window = causal & ~torch.ones(length, length, dtype=torch.bool).tril(-3)
    padded = causal.expand(2, 1, length, length).clone()
    padded[1, :, :, 0] = False
    for mask in (causal, causal.expand(2, 1, length, length), window, padded, torch.zeros(length, length, dtype=dtype)):
        expected = sdpa(q, k, v, mask)
        assert torch.equal(causal_when_lower_triangular(q, k, v, mask), expected)
    assert torch.equal(causal_when_lower_triangular(q, k, v, causal), sdpa(q, k, v, is_causal=True))
    assert not torch.equal(sdpa(q, k, v, window), sdpa(q, k, v, is_causal=True))
    short = q[..., -3:, :]
    assert torch.equal(causal_when_lower_triangular(short, k, v, causal[-3:]), sdpa(short, k, v, causal[-3:]))


def test_a_traced_llama_forward_calls_sdpa_through_its_fast_forward():
    """A traced Llama materialises its causal mask (the graph keeps SDPA with it); explain's forward calls SDPA
    through the fast forward, and the logit it explains is the model's own."""
    from models import tiny_llama

    from lrpgraph.engine.model_traces import traces_of

    model = tiny_llama()
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(4))
    ex = lrpgraph.explain(model, ids, target=3, rules="attnlrp")
    (traced,) = [t for kept in traces_of(model).by_structure.values() for t in kept]
    assert "causal_when_lower_triangular" in traced.forward(frozenset()).module.code
    graph = traced.graph.module
    assert any(n.target is torch.ops.aten.scaled_dot_product_attention.default for n in graph.graph.nodes)
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(ex.conservation.seed, logits[:, -1, 3], rtol=1e-12, atol=0)
