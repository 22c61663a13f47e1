"""PA-LRP: positions as relevance sources. References are gradient × input of the same computation with
positions as explicit inputs (autograd in the test only; for linear/ReLU paths LRP-epsilon equals it)."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lrpgraph
from lrpgraph.tools.zoo import architectures

TIGHT = {"epsilon": 1e-12, "stabilizer": 1e-12}


class LearnedPE(nn.Module):
    """Token embedding + learnable position embedding → linear → ReLU → linear, no biases."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(7, 4)
        self.pos = nn.Embedding(5, 4)
        self.l1 = nn.Linear(4, 6, bias=False)
        self.l2 = nn.Linear(6, 3, bias=False)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1])
        h = self.tok(input_ids) + self.pos(positions)
        return self.l2(torch.relu(self.l1(h))).sum(1)

    def parts(self, input_ids):
        return self.tok(input_ids), self.pos(torch.arange(input_ids.shape[1])).expand(len(input_ids), -1, -1)

    def from_parts(self, tok, pos):
        return self.l2(torch.relu(self.l1(tok + pos))).sum(1)


def test_learnable_position_embedding_hand_worked():
    torch.manual_seed(0)
    model = LearnedPE().double()
    ids = torch.tensor([[1, 4, 2, 6, 0], [3, 3, 5, 1, 2]])
    ex = lrpgraph.explain(model, {"input_ids": ids}, target=1, rules=lrpgraph.preset("pa-lrp", **TIGHT))
    tok, pos = (t.detach().requires_grad_() for t in model.parts(ids))
    model.from_parts(tok, pos)[:, 1].sum().backward()
    torch.testing.assert_close(ex.relevance["input_ids"], (tok.grad * tok).sum(-1).detach())
    torch.testing.assert_close(ex.positional, (pos.grad * pos).sum(-1).detach())
    # conservation: with no biases tokens and positions account for everything
    torch.testing.assert_close(ex.conservation.accounted, ex.conservation.seed, rtol=1e-9, atol=1e-12)


def test_positions_are_what_attnlrp_loses_to_constants():
    torch.manual_seed(0)
    model = LearnedPE().double()
    ids = torch.tensor([[1, 4, 2, 6, 0]])
    pa = lrpgraph.explain(model, {"input_ids": ids}, target=0, rules=lrpgraph.preset("pa-lrp", **TIGHT))
    attn = lrpgraph.explain(model, {"input_ids": ids}, target=0, rules=lrpgraph.preset("attnlrp", **TIGHT))
    torch.testing.assert_close(pa.relevance["input_ids"], attn.relevance["input_ids"])
    assert pa.conservation.positional.item() == pytest.approx(attn.conservation.absorbed["constants"], rel=1e-9)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


class RotaryHead(nn.Module):
    """One attention head over 4 positions with rotary embeddings, no biases, causal."""

    def __init__(self, d=4):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.out = nn.Linear(d, 2, bias=False)
        self.register_buffer("inv_freq", 1.0 / (10.0 ** (torch.arange(0, d, 2).double() / d)), persistent=False)

    def tables(self, length):
        angles = torch.arange(length, dtype=self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], -1)
        return angles.cos(), angles.sin()

    def forward(self, x):
        cos, sin = self.tables(x.shape[1])
        return self.attend(x, cos, sin, cos, sin)

    def attend(self, x, cos_q, sin_q, cos_k, sin_k):
        q = self.q(x) * cos_q + rotate_half(self.q(x)) * sin_q
        k = self.k(x) * cos_k + rotate_half(self.k(x)) * sin_k
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], self.v(x)[:, None], is_causal=True)[:, 0]
        return self.out(o[:, -1])


def half_grad(t):
    return t * 0.5 + (t * 0.5).detach()


def quarter_grad(t):
    return t * 0.25 + (t * 0.75).detach()


def rotary_reference(model, x, target):
    """Gradient × input of the AttnLRP-modified forward with each cos/sin use an explicit input: every
    rotary product splits uniformly (both factors' gradients halved), q and k ÷4, v ÷2."""
    cos, sin = model.tables(x.shape[1])
    tables = [t.clone().requires_grad_() for t in (cos, sin, cos, sin)]
    xr = x.clone().requires_grad_()
    qx, kx = model.q(xr), model.k(xr)
    q = half_grad(qx) * half_grad(tables[0]) + half_grad(rotate_half(qx)) * half_grad(tables[1])
    k = half_grad(kx) * half_grad(tables[2]) + half_grad(rotate_half(kx)) * half_grad(tables[3])
    v = model.v(xr)
    o = F.scaled_dot_product_attention(
        quarter_grad(q)[:, None], quarter_grad(k)[:, None], half_grad(v)[:, None], is_causal=True
    )[:, 0]
    model.out(o[:, -1])[:, target].sum().backward()
    per_use = [(t.grad * t.detach()).sum(-1) for t in tables]  # [T] per use: signed Σ_d
    return (xr.grad * x), per_use


def test_rotary_attention_with_four_positions():
    torch.manual_seed(0)
    model = RotaryHead().double()
    x = torch.randn(1, 4, 4, dtype=torch.float64)
    tokens, per_use = rotary_reference(model, x, target=1)
    tight = lrpgraph.preset("pa-lrp", **TIGHT).with_rules(attention={"rule": "uniform", "epsilon": 1e-12})
    signed = lrpgraph.explain(model, x, target=1, rules=tight.with_params(positional="signed"))
    absolute = lrpgraph.explain(model, x, target=1, rules=tight)
    torch.testing.assert_close(signed.relevance["x"], tokens, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(signed.positional[0], sum(per_use), rtol=1e-6, atol=1e-10)
    # per layer and factor, what q and k send to cos (and to sin) is added before |·|
    cos_q, sin_q, cos_k, sin_k = per_use
    by_factor = (cos_q + cos_k).abs() + (sin_q + sin_k).abs()
    torch.testing.assert_close(absolute.positional[0], by_factor, rtol=1e-6, atol=1e-10)
    # AttnLRP gives rotary tables nothing; tokens plus signed positions are what AttnLRP gives the tokens
    attn = lrpgraph.explain(model, x, target=1, rules=lrpgraph.preset("attnlrp", **TIGHT))
    torch.testing.assert_close(signed.conservation.accounted, attn.conservation.input_total, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,sequence", [("llama", 8), ("gpt2", 8), ("bert", 8), ("gptj", 8), ("phi", 8)])
def test_positional_relevance_on_zoo_models(name, sequence):
    (arch,) = architectures([name])
    model, inputs = arch.build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex = lrpgraph.explain(model, inputs, rules="pa-lrp")
    assert ex.positional.shape == (2, sequence) and ex.positional.abs().sum() > 0
    assert ex.combined.shape == (2, sequence) and ex.combined.abs().amax(-1).allclose(torch.ones(2))
    base = lrpgraph.explain(model, inputs, rules="attnlrp")
    assert base.positional is None


def test_vision_positions_per_patch_and_on_pixels():
    (arch,) = architectures(["vit"])
    model, inputs = arch.build()
    with torch.no_grad():  # a position table that is not zero
        model.vit.embeddings.position_embeddings.normal_()
    ex = lrpgraph.explain(model, inputs, rules="pa-lrp")
    assert ex.positional.shape == (2, 16)  # 4×4 patches, the class token's row dropped
    pixels = lrpgraph.viz.patches_to_pixels(ex.positional, image_size=16, patch_size=4)
    assert pixels.shape == (2, 16, 16)
    torch.testing.assert_close(pixels[:, :4, :4].sum((1, 2)), ex.positional[:, 0])  # spread by 1/p²
    expected = torch.relu(ex.relevance["pixel_values"].sum(1) + pixels)
    torch.testing.assert_close(ex.combined, expected)  # the authors' image map


def test_encoder_decoder_has_one_positional_map_per_sequence():
    (arch,) = architectures(["bart"])
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, rules="pa-lrp")
    assert set(ex.positional) == {"input_ids", "decoder_input_ids"}
    assert ex.positional["decoder_input_ids"].shape == inputs["decoder_input_ids"].shape


def test_model_without_positional_encoding_says_so_and_returns_zeros():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.warns(UserWarning, match="no positional encoding"):
        ex = lrpgraph.explain(model, ids, target=(0, 2, 1), rules="pa-lrp")
    assert ex.positional.shape == (1, 3) and ex.positional.abs().sum() == 0


def test_positional_option_only_for_positional_presets():
    with pytest.raises(lrpgraph.RuleSetError, match="pa-lrp"):
        lrpgraph.preset("attnlrp", positional="signed")
    with pytest.raises(lrpgraph.RuleSetError, match="'abs', 'signed'"):
        lrpgraph.preset("pa-lrp", positional="loud")


def test_sinusoidal_table_built_in_the_graph():
    class Sinusoidal(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(9, 4)
            self.head = nn.Linear(4, 2, bias=False)

        def forward(self, input_ids):
            t = torch.arange(input_ids.shape[1], dtype=torch.float32)[:, None]
            freq = torch.exp(-math.log(100.0) * torch.arange(0, 4, 2, dtype=torch.float32) / 4)
            table = torch.cat([torch.sin(t * freq), torch.cos(t * freq)], -1)
            return self.head(self.emb(input_ids) + table).sum(1)

    ex = lrpgraph.explain(Sinusoidal(), {"input_ids": torch.tensor([[1, 5, 2]])}, target=0, rules="pa-lrp")
    assert ex.positional.abs().sum() > 0
