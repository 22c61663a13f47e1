"""Attention rules: hand-worked softmax and bilinear cases, and SDPA as one op against SDPA written out."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lrpgraph

TIGHT = {"epsilon": 1e-12, "stabilizer": 1e-12}


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_softmax_rule_hand_worked():
    # x = [0, ln 3] → s = [1/4, 3/4]; R = [1, 2], ΣR = 3; R_x = x ⊙ (R − 3s) = [0, ln3·(2 − 9/4)]
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    ex = lrpgraph.explain(
        Fn(lambda x: torch.softmax(x, -1)),
        x,
        target=torch.tensor([[1.0, 2.0]], dtype=torch.float64),
        rules=lrpgraph.preset("attnlrp", **TIGHT),
    )
    torch.testing.assert_close(
        ex.relevance["args_0"], torch.tensor([[0.0, -0.25 * math.log(3.0)]], dtype=torch.float64)
    )


def test_bilinear_uniform_rule_hand_worked():
    # a·b = [1, 2]·[3, 4]ᵀ = 11, R = 22: S = 22/(2·11) = 1, R_a = a ⊙ (S bᵀ) = [3, 8], R_b = b ⊙ (aᵀ S) = [3, 8]
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[3.0], [4.0]], dtype=torch.float64)
    ex = lrpgraph.explain(
        Fn(lambda a, b: a @ b),
        (a, b),
        target=torch.tensor([[22.0]], dtype=torch.float64),
        rules=lrpgraph.preset("attnlrp", **TIGHT),
    )
    torch.testing.assert_close(ex.relevance["args_0"], torch.tensor([[3.0, 8.0]], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["args_1"], torch.tensor([[3.0], [8.0]], dtype=torch.float64))


def test_bilinear_with_a_bias_term():
    # baddbmm(bias=1, a, b) with a·b = 11: out = 12, R = 24 → the product term gets 24·11/12 = 22, then the
    # uniform rule: S = 22/(2·11) = 1, R_a = a ⊙ bᵀ = [3, 8], R_b = [3, 8]; the bias keeps 2 (ALiBi in BLOOM)
    a = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    b = torch.tensor([[[3.0], [4.0]]], dtype=torch.float64)
    bias = torch.ones(1, 1, 1, dtype=torch.float64)
    ex = lrpgraph.explain(
        Fn(lambda a, b: torch.baddbmm(bias, a, b)),
        (a, b),
        target=torch.full((1, 1, 1), 24.0, dtype=torch.float64),
        rules=lrpgraph.preset("attnlrp", **TIGHT),
    )
    torch.testing.assert_close(ex.relevance["args_0"], torch.tensor([[[3.0, 8.0]]], dtype=torch.float64))
    torch.testing.assert_close(ex.relevance["args_1"], torch.tensor([[[3.0], [8.0]]], dtype=torch.float64))
    assert ex.conservation.absorbed["rules"] == pytest.approx(2.0)


class GatedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(4, 6, bias=False).double()
        self.up = nn.Linear(4, 6, bias=False).double()

    def forward(self, x):
        return F.silu(self.gate(x)) * self.up(x)


@pytest.mark.parametrize("method,gate_share", [("attnlrp", 0.5), ("cp-lrp", 0.0)])
def test_gate_rules(method, gate_share):
    model = GatedMLP()
    x = torch.randn(3, 4, dtype=torch.float64)
    ex = lrpgraph.explain(
        model,
        x,
        target=torch.randn(3, 6, dtype=torch.float64),
        rules=lrpgraph.preset(method, **TIGHT),
        record=["gate", "up"],
    )
    R = ex.seed
    torch.testing.assert_close(ex.latent["up"], R * (1 - gate_share))
    torch.testing.assert_close(ex.latent["gate"], R * gate_share)


def written_out(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa:
        groups = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(groups, -3), v.repeat_interleave(groups, -3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, -1) @ v


CASES = {
    "plain": {},
    "scale": {"scale": 0.3},
    "causal": {"is_causal": True},
    "bool_mask": {"mask": "bool"},
    "causal_mask": {"mask": "tril"},  # exactly causal, as a traced model materialises it: run as is_causal
    "causal_gqa": {"is_causal": True, "enable_gqa": True},
    "additive_mask": {"mask": "float"},
    "gqa": {"enable_gqa": True},
}


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [5, 150], ids=["one-block", "three-blocks"])
def test_sdpa_rule_equals_the_rules_of_attention_written_out(case, method, n):
    """150 positions: the rule's query blocks of 64 rows (causal blocks read keys up to their last row only)."""
    torch.manual_seed(1)
    spec = dict(CASES[case])
    kv_heads = 2 if spec.get("enable_gqa") else 4
    q = torch.randn(2, 4, n, 8, dtype=torch.float64)
    k = torch.randn(2, kv_heads, n, 8, dtype=torch.float64)
    v = torch.randn(2, kv_heads, n, 8, dtype=torch.float64)
    if spec.get("mask") == "bool":
        mask = torch.rand(2, 1, n, n) > 0.3
        mask[..., 0] = True
        spec["mask"] = mask
    elif spec.get("mask") == "tril":
        spec["mask"] = torch.ones(n, n, dtype=torch.bool).tril().expand(2, 1, n, n)
    elif spec.get("mask") == "float":
        spec["mask"] = torch.randn(2, 1, n, n, dtype=torch.float64)
    mask = spec.pop("mask", None)

    def fused(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **spec)

    def manual(q, k, v):
        return written_out(q, k, v, mask, **spec)

    torch.testing.assert_close(fused(q, k, v), manual(q, k, v))
    seed = torch.randn(2, 4, n, 8, dtype=torch.float64)
    rules = lrpgraph.preset(method, **TIGHT)
    a = lrpgraph.explain(Fn(fused), (q, k, v), target=seed, rules=rules)
    b = lrpgraph.explain(Fn(manual), (q, k, v), target=seed, rules=rules)
    assert a.stats["rules"].get("attention:" + ("uniform" if method == "attnlrp" else "values")) == 1
    assert b.stats["rules"].get("attention_values:" + ("uniform" if method == "attnlrp" else "values")) == 1
    for name in a.relevance:
        torch.testing.assert_close(a.relevance[name], b.relevance[name], rtol=1e-6, atol=1e-9)
    if method == "cp-lrp":
        assert a.relevance["args_0"].abs().sum() == 0 and a.relevance["args_1"].abs().sum() == 0
