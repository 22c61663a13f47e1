"""absLRP (relative absolute magnitude LRP): positive contributions over the absolute total, then each
layer's input relevance rescaled per sample to unit absolute sum.

For contributions z_ij = x_i w_ij of output j: R_i = Σ_j (z_ij + |z_ij|) / (|z|_j + eps) · R_j with
|z|_j = Σ_i |x_i||w_ij| + |b_j|. The same rule runs on layers, on both operands of bilinear products
(attention) and of elementwise products, and on each branch of a sum. Kernels are named "abs".
"""

from __future__ import annotations

import torch

from .attention import ATTENTION, ATTENTION_VALUES, Attention
from .bilinear import MATMUL, Bilinear
from .elementwise import ADD, GATE, PRODUCT
from .layer_rules import CONV, LINEAR
from .linear_maps import LinearMap
from .pooling import AVGPOOL, SUM
from .registry import rule
from .tensors import unbroadcast


def unit(R: torch.Tensor, samples: int) -> torch.Tensor:
    """R rescaled per sample (dim 0, or the leading block of a flattened batch) to Σ|R| = 1."""
    groups = R.reshape(samples, -1) if samples and R.numel() % samples == 0 else R.reshape(1, -1)
    total = groups.abs().sum(-1, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
    return (groups / total).reshape(R.shape)


@rule((LINEAR, CONV, SUM, AVGPOOL), "abs", needs=("x",))
def abs_layer(R, x, layer: LinearMap, out, *, epsilon: float = 1e-6, samples: int):
    """R_x = x ⊙ Aᵀ(s; w) + |x| ⊙ Aᵀ(s; |w|) with s = R / (A(|x|; |w|) + |b| + eps), then unit-normalised."""
    w, b = layer.weight, layer.bias
    if w is None:  # sums and pools: nonnegative coefficients
        s = R / (layer.forward(x.abs(), None, None).to(R.dtype) + epsilon)
        return unit((x + x.abs()) * layer.adjoint(s, None), samples)
    total = layer.forward(x.abs(), w.abs(), None if b is None else b.abs())
    s = R / (total.to(R.dtype) + epsilon)
    return unit(x * layer.adjoint(s, w) + x.abs() * layer.adjoint(s, w.abs()), samples)


@rule(ADD, "abs", needs=("terms",))
def abs_add(R, terms, out, relevant, *, epsilon: float = 1e-6, samples: int):
    """Each branch of a sum: (t + |t|)/(Σ|t| + eps)·R, normalised on its own (absLRP's residual rule)."""
    total = sum(t.abs().to(R.dtype) for t in terms) + epsilon
    return [
        unit(unbroadcast((t + t.abs()) * R / total, t.shape), samples) if rel else None
        for t, rel in zip(terms, relevant, strict=True)
    ]


def _product_abs(R, operands, relevant, epsilon, samples):
    a, b = operands
    z = a * b
    share = (z + z.abs()).to(R.dtype) * R / (z.abs().to(R.dtype) + epsilon)
    return [
        unit(unbroadcast(share, op.shape), samples) if rel else None for op, rel in zip(operands, relevant, strict=True)
    ]


@rule(PRODUCT, "abs", needs=("operands",))
def abs_product(R, operands, relevant, *, epsilon: float = 1e-6, samples: int):
    """Both factors of a product get (z + |z|)/(|z| + eps)·R, each normalised."""
    return _product_abs(R, operands, relevant, epsilon, samples)


@rule(GATE, "abs", needs=("operands",))
def abs_gate(R, operands, relevant, gate: int, *, epsilon: float = 1e-6, samples: int):
    """A gate is a product like any other for absLRP."""
    return _product_abs(R, operands, relevant, epsilon, samples)


def _bilinear_abs(R, a, b, product: Bilinear, epsilon, samples):
    a, b = a.to(R.dtype), b.to(R.dtype)
    s = R / (product.forward(a.abs(), b.abs()) + epsilon)
    ra = a * unbroadcast(product.adjoint_a(s, b), a.shape) + a.abs() * unbroadcast(
        product.adjoint_a(s, b.abs()), a.shape
    )
    rb = b * unbroadcast(product.adjoint_b(s, a), b.shape) + b.abs() * unbroadcast(
        product.adjoint_b(s, a.abs()), b.shape
    )
    return unit(ra, samples), unit(rb, samples)


@rule(MATMUL, "abs", needs=("a", "b"))
def abs_matmul(R, a, b, out, product: Bilinear, *, epsilon: float = 1e-6, samples: int):
    """Both operands of a matrix product get the absolute-magnitude rule, each normalised."""
    return _bilinear_abs(R, a, b, product, epsilon, samples)


@rule(ATTENTION_VALUES, "abs", needs=("a", "b"))
def abs_attention_values(R, a, b, out, product: Bilinear, probs_first: bool, *, epsilon: float = 1e-6, samples: int):
    return _bilinear_abs(R, a, b, product, epsilon, samples)


@rule(ATTENTION, "abs", needs=("q", "k", "v", "mask", "out"))
def abs_attention(R, attention: Attention, out, want_mask: bool, *, epsilon: float = 1e-6, samples: int):
    """SDPA: the absolute rule on p·v and on q·kᵀ, AttnLRP's softmax rule between them; q, k, v normalised.

    The probabilities are nonnegative, so on p·v: s = R/(p|v| + eps), R_v = (v + |v|) ⊙ pᵀs and
    R_p = p ⊙ s(v + |v|)ᵀ. The softmax rule gives the logits logits ⊙ (R_p − p ΣR_p) (an additive mask
    keeps its epsilon share), and on q·kᵀ: s' = R_logits/(|q||k|ᵀ + eps).
    """
    dtype = R.dtype
    v = attention.repeat(attention.v.to(dtype))
    k = attention.repeat(attention.k.to(dtype))
    Rq = R.new_empty(attention.q.shape, dtype=dtype)
    to_k, to_abs_k, to_v = (
        R.new_zeros(k.shape, dtype=dtype),
        R.new_zeros(k.shape, dtype=dtype),
        R.new_zeros(v.shape, dtype=dtype),
    )
    for rows, keys, qb, probs, _ in attention.blocks(dtype):
        vb, kb = v[..., keys, :], k[..., keys, :]
        s_out = R[..., rows, :] / (probs @ vb.abs() + epsilon)
        to_v[..., keys, :] += probs.mT @ s_out
        R_probs = probs * (s_out @ (vb + vb.abs()).mT)
        R_logits = (qb @ kb.mT) * (R_probs - probs * R_probs.sum(-1, keepdim=True))
        s_qk = R_logits / (qb.abs() @ kb.abs().mT + epsilon)
        Rq[..., rows, :] = qb * (s_qk @ kb) + qb.abs() * (s_qk @ kb.abs())
        to_k[..., keys, :] += s_qk.mT @ qb
        to_abs_k[..., keys, :] += s_qk.mT @ qb.abs()
    Rk = k * to_k + k.abs() * to_abs_k
    Rv = (v + v.abs()) * to_v
    return (
        unit(Rq, samples),
        unit(attention.fold(Rk, attention.k), samples),
        unit(attention.fold(Rv, attention.v), samples),
        None,
    )
