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
