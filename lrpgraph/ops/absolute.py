"""absLRP (relative absolute magnitude LRP), exactly as the authors' code computes it (../shared/REFERENCE-METHODS.md).

For an op y = f(x_1..x_n; θ) and f~ the same op on |x_k| with |θ|:
    s = R / (|y| + 1e-9), y the actual output (bias included),
    R_k = N1(x_k ⊙ J_f,k(x)ᵀ s + |x_k| ⊙ J_f~,k(|x|)ᵀ s),
every input normalised on its own, N1(R) = R / (Σ|R| + 1e-9) per sample. Written out per op class:
layers (linear, conv), pools, sums, products, both attention matmuls and fused attention, softmax
(max and denominator detached), layer and batch norm (statistics detached; elementwise, no centring
term), pointwise functions (f'), max pooling (no division: both routes), and the positivity filter
N1((y + |y|)·R/(|y| + 1e-9)) that the authors' dropout, flatten and CLS select apply. A residual sum
y = x + f(x) gives its shortcut the authors' total derivative through the branch,
N1((x + |x|)·s + x ⊙ J_f(x)ᵀ[(1 + sign b)·s]) (`abs_add`, the branch's Jacobian from `branch.py`).
Kernels are named "abs" ("filter" for the positivity filter).
"""

from __future__ import annotations

import torch

from .attention import ATTENTION, ATTENTION_VALUES, SOFTMAX, Attention, masked_to_zero
from .bilinear import MATMUL, Bilinear
from .branch import Residual
from .elementwise import ACTIVATION, ADD, GATE, PRODUCT
from .layer_rules import CONV, LINEAR
from .linear_maps import LinearMap
from .normalisation import BATCHNORM, NORM
from .pooling import AVGPOOL, MAXPOOL, SUM, MaxPool
from .registry import rule
from .reindex import REINDEX
from .rescale import EPS, mass, n1
from .tensors import unbroadcast


def _over(R: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """s = R / (|y| + 1e-9)."""
    return R / (y.to(R.dtype).abs() + EPS)


@rule((LINEAR, CONV), "abs", needs=("x", "out"), linear=False)
def abs_layer(R, x, layer: LinearMap, out, *, samples: int):
    """R_i = N1(Σ_j (x_i w_ij + |x_i||w_ij|) R_j / (|z_j| + 1e-9)), z the layer's output with its bias."""
    s = _over(R, out)
    x = x.to(R.dtype)
    return n1(x * layer.adjoint(s, layer.weight) + x.abs() * layer.adjoint(s, layer.weight.abs()), samples)


@rule((SUM, AVGPOOL), "abs", needs=("x", "out"), linear=False)
def abs_pool(R, x, layer: LinearMap, out, *, samples: int):
    """Sums and average pools: R_i = N1((x_i + |x_i|)/n · R_j / (|y_j| + 1e-9))."""
    x = x.to(R.dtype)
    return n1((x + x.abs()) * layer.adjoint(_over(R, out), None), samples)


@rule(ADD, "abs", needs=("terms", "out", "branch"), linear=False)
def abs_add(R, terms, out, relevant, residual: Residual | None = None, *, samples: int):
    """A sum y = Σ t, s = R / (|y| + 1e-9). Each term of a sum of independent terms (tokens + positions), and the
    branch term b of a residual sum: N1((t + |t|)·s).

    A residual sum y = x + b whose branch is computed from the shortcut, b = f(x) (`residual`, found on the graph
    by `flow/residuals.py`): the authors take x ⊙ ∇_x⟨s, y + |b| + |x|⟩ with autograd's total derivative, so the
    shortcut's share includes the path through the branch:
        R_x = N1((x + |x|)·s + x ⊙ J_f(x)ᵀ[(1 + sign b)·s]),
    J_f(x)ᵀv a plain vector–Jacobian product of the branch with layer-norm and softmax statistics held constant
    (`branch.py`). It is the one kernel that differentiates: the branch is replayed under `torch.func.vjp` on
    fresh detached tensors, which records nothing on autograd's tape and leaves the model and every `.grad` alone.
    """
    s = _over(R, out)
    shares = [(t + t.abs()).to(R.dtype) * s if rel else None for t, rel in zip(terms, relevant, strict=True)]
    if residual is not None and relevant[residual.shortcut]:
        i = residual.shortcut
        x, b = terms[i].to(R.dtype), terms[1 - i]
        direction = unbroadcast((1 + torch.sign(b).to(R.dtype)) * s, b.shape)
        shares[i] = unbroadcast(shares[i], x.shape) + x * residual.vjp(direction)
    return [
        None if share is None else n1(unbroadcast(share, t.shape), samples)
        for t, share in zip(terms, shares, strict=True)
    ]


def _product_abs(R, operands, relevant, samples):
    a, b = operands
    z = a * b
    share = (z + z.abs()).to(R.dtype) * _over(R, z)
    return [
        n1(unbroadcast(share, op.shape), samples) if rel else None for op, rel in zip(operands, relevant, strict=True)
    ]


@rule(PRODUCT, "abs", needs=("operands",), linear=False)
def abs_product(R, operands, relevant, *, samples: int):
    """Both factors of a product: N1((z + |z|)·R / (|z| + 1e-9)), z = a·b."""
    return _product_abs(R, operands, relevant, samples)


@rule(GATE, "abs", needs=("operands",), linear=False)
def abs_gate(R, operands, relevant, gate: int, *, samples: int):
    """A gate is a product like any other for absLRP."""
    return _product_abs(R, operands, relevant, samples)


def _bilinear_abs(R, a, b, out, product: Bilinear, samples):
    a, b = a.to(R.dtype), b.to(R.dtype)
    s = _over(R, out)
    ra = a * unbroadcast(product.adjoint_a(s, b), a.shape) + a.abs() * unbroadcast(
        product.adjoint_a(s, b.abs()), a.shape
    )
    rb = b * unbroadcast(product.adjoint_b(s, a), b.shape) + b.abs() * unbroadcast(
        product.adjoint_b(s, a.abs()), b.shape
    )
    return n1(ra, samples), n1(rb, samples)


@rule(MATMUL, "abs", needs=("a", "b", "out"), linear=False)
def abs_matmul(R, a, b, out, product: Bilinear, *, samples: int):
    """q·kᵀ and any product of two relevant matrices: R_a = N1(a ⊙ (s bᵀ) + |a| ⊙ (s |b|ᵀ)), s = R/(|ab| + 1e-9)."""
    return _bilinear_abs(R, a, b, out, product, samples)


@rule(ATTENTION_VALUES, "abs", needs=("a", "b", "out"), linear=False)
def abs_attention_values(R, a, b, out, product: Bilinear, probs_first: bool, *, samples: int):
    """A·v: the same absolute rule for both operands."""
    return _bilinear_abs(R, a, b, out, product, samples)


@rule(SOFTMAX, "abs", needs=("x", "out"), linear=False)
def abs_softmax(R, x, out, dim: int, *, samples: int):
    """Max and denominator detached (a diagonal Jacobian): N1((x ⊙ p + |x| ⊙ p~) ⊙ R / (p + 1e-9)),
    p~ = softmax(|x|)."""
    x = x.to(R.dtype)
    p = out.to(R.dtype)
    finite = torch.isfinite(x)
    p_abs = torch.softmax(torch.where(finite, x.abs(), float("-inf")), dim)
    return n1((masked_to_zero(x) * p + torch.where(finite, x.abs(), 0.0) * p_abs) * R / (p + EPS), samples)


@rule(ATTENTION, "abs", needs=("q", "k", "v", "mask", "out"), linear=False)
def abs_attention(R, attention: Attention, out, want_mask: bool, *, samples: int):
    """Fused attention as the three rules above in turn: A·v, softmax, q·kᵀ (q scaled); q, k, v each N1.

    The normalisations between them, R_A/(m_A + ε) and then R_S/(m_S/(m_A + ε) + ε) with m the per-sample masses
    Σ|·| of the unnormalised relevances, rescale each sample by one positive factor, which the rules after are linear
    in: the blocks over query rows need no pass of their own, and the final N1 of R_q and R_k takes the factor
    exactly as the stabilizer ε·(m_S + ε·(m_A + ε)) in place of ε.
    """
    dtype = R.dtype
    v = attention.repeat(attention.v.to(dtype))
    k = attention.repeat(attention.k.to(dtype))
    s_out = _over(R, out)
    Rq = R.new_empty(attention.q.shape, dtype=dtype)
    to_k, to_abs_k = R.new_zeros(k.shape, dtype=dtype), R.new_zeros(k.shape, dtype=dtype)
    to_v = R.new_zeros(v.shape, dtype=dtype)
    mass_probs = mass_logits = 0.0
    for rows, keys, qb, probs, additive in attention.blocks(dtype):
        vb, kb, sb = v[..., keys, :], k[..., keys, :], s_out[..., rows, :]
        to_v[..., keys, :] += probs.mT @ sb  # probabilities are ≥ 0: |A| = A
        R_probs = probs * (sb @ vb.mT) + probs * (sb @ vb.abs().mT)
        mass_probs = mass_probs + mass(R_probs, samples)
        logits = qb @ kb.mT
        scores = logits if additive is None else logits + additive.to(dtype)
        if not attention.is_causal and additive is None:
            finite = torch.ones_like(scores, dtype=torch.bool)
        else:
            finite = probs > 0
        p_abs = torch.softmax(torch.where(finite, scores.abs(), float("-inf")), -1).nan_to_num_(0.0)
        R_logits = (torch.where(finite, scores, 0.0) * probs + torch.where(finite, scores.abs(), 0.0) * p_abs) * (
            R_probs / (probs + EPS)
        )
        mass_logits = mass_logits + mass(R_logits, samples)
        s_qk = R_logits / (logits.abs() + EPS)
        Rq[..., rows, :] = qb * (s_qk @ kb) + qb.abs() * (s_qk @ kb.abs())
        to_k[..., keys, :] += s_qk.mT @ qb
        to_abs_k[..., keys, :] += s_qk.mT @ qb.abs()
    Rk = k * to_k + k.abs() * to_abs_k
    Rv = (v + v.abs()) * to_v
    eps = EPS * (mass_logits + EPS * (mass_probs + EPS))
    return (
        n1(Rq, samples, eps),
        n1(attention.fold(Rk, attention.k), samples, eps),
        n1(attention.fold(Rv, attention.v), samples),
        None,
    )


@rule(NORM, "abs", needs=("x", "out"), linear=False)
def abs_norm(R, x, layer, out, *, samples: int):
    """Layer norm, statistics detached: N1((x ⊙ w/σ + |x| ⊙ |w|/σ~) ⊙ R / (|y| + 1e-9)), σ~ the statistic of |x|."""
    x = x.to(R.dtype)
    return n1((x * layer.gain(x) + x.abs() * layer.gain(x.abs(), absolute=True)) * _over(R, out), samples)


@rule(BATCHNORM, "abs", needs=("x", "out"), linear=False)
def abs_batchnorm(R, x, layer, out, *, samples: int):
    """Eval batch norm on its own: N1((x γ/σ + |x| |γ|/σ) · R / (|y| + 1e-9))."""
    x = x.to(R.dtype)
    scale = layer.scale.to(R.dtype)
    return n1((x * scale + x.abs() * scale.abs()) * _over(R, out), samples)


@rule(ACTIVATION, "abs", needs=("x", "out"), linear=False)
def abs_activation(R, x, out, slope, *, samples: int):
    """Pointwise f: N1((x f'(x) + |x| f'(|x|)) ⊙ R / (|f(x)| + 1e-9)); without a known f' the identity."""
    if slope is None:  # the identity rule: scalings, casts, functions the authors' models do not have
        return R
    x = x.to(R.dtype)
    gain = x * slope(x) + x.abs() * slope(x.abs())
    return n1(gain * _over(R, out), samples)


@rule(MAXPOOL, "abs", needs=("x",), linear=False)
def abs_maxpool(R, x, pool: MaxPool, *, samples: int):
    """No division: N1(x ⊙ route_argmax(x)(R) + |x| ⊙ route_argmax(|x|)(R)) (after a ReLU: N1(2·y·R) at the winner)."""
    x = x.to(R.dtype)
    return n1(x * pool.to_winners(R) + x.abs() * pool.of(x.abs()).to_winners(R), samples)


@rule(REINDEX, "filter", needs=("out",), linear=False)
def positivity_filter(R, adjoint, out, *, samples: int):
    """The authors' dropout, flatten and CLS select: N1((y + |y|)·R / (|y| + 1e-9)), then moved as the values were."""
    y = out.to(R.dtype)
    return adjoint(n1((y + y.abs()) * _over(R, y), samples))
