"""The classic LRP rules for maps linear in x: layers with weights, sums and average pools.

Op classes "linear" (linear layers and matrix products with a constant operand) and "conv". Each
kernel is `fn(R, x, layer, out, **params) -> R_x` where `layer` is a `LinearMap` (forward and
adjoint) and `out` the node's output z. Formulas: RULES.md; they match Zennit's rules term by term
(the modified biases included), so the presets reproduce Zennit's composites.
"""

from __future__ import annotations

import torch

from .complex import COMPLEX
from .linear_maps import LinearMap
from .normalization import BATCHNORM, NORM
from .pooling import AVGPOOL, SUM
from .registry import declare, rule
from .tensors import divide, negative, ones_like_shape, positive

LINEAR = declare("linear", absorbs="bias")
CONV = declare("conv", absorbs="bias")
WEIGHTED = (LINEAR, CONV)


def _box(params: dict) -> None:
    low, high = torch.as_tensor(params["low"]), torch.as_tensor(params["high"])
    if not bool((low < high).all()):
        raise ValueError(f"low must be below high, got low={params['low']!r}, high={params['high']!r}")


def _alpha_beta(params: dict) -> None:
    if abs(params["alpha"] - params["beta"] - 1.0) > 1e-12:
        raise ValueError(f"alpha-beta needs alpha - beta = 1, got alpha={params['alpha']}, beta={params['beta']}")


@rule((*WEIGHTED, NORM, BATCHNORM, COMPLEX), "epsilon", needs=("x", "out"), default=True)
def epsilon(R, x, layer: LinearMap, out, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """R_i = x_i Σ_j A_ij R_j / stab(z_j); the bias keeps its share."""
    return x * layer.adjoint(divide(R, out, epsilon, sign_aware), layer.weight)


@rule((SUM, AVGPOOL), "norm", needs=("x", "out"), default=True)
def norm(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """Zennit's Norm: proportional to each input's contribution to the sum or average."""
    return x * layer.adjoint(divide(R, out, stabilizer), None)


def _weights(layer: LinearMap, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if layer.weight is None:
        raise TypeError(f"rule '{name}' needs a layer with weights")
    return layer.weight, layer.bias


def _split_contributions(layer: LinearMap, x, w, out):
    """(z, a): z = A(x; w) without bias and a = A(|x|; |w|).

    With them the positive and negative contributions need no forward of their own:
    A(x⁺; w⁺) + A(x⁻; w⁻) = (z + a)/2 and A(x⁺; w⁻) + A(x⁻; w⁺) = (z − a)/2, and on the way back
    x⁺⊙Aᵀ(s; w⁺) + x⁻⊙Aᵀ(s; w⁻) = (x⊙Aᵀ(s; w) + |x|⊙Aᵀ(s; |w|))/2. So gamma, z⁺ and alpha-beta
    cost one forward and two adjoints, like a gradient, instead of up to four of each.
    """
    return layer.without_bias(out), layer.forward(x.abs(), w.abs(), None)


@rule(WEIGHTED, "gamma", needs=("x", "out"))
def gamma(R, x, layer: LinearMap, out, *, gamma: float = 0.25, stabilizer: float = 1e-6):
    """Generalised gamma (Zennit): w+γw⁺ on x⁺ and w+γw⁻ on x⁻ where z>0, swapped where z<0.

    With σ = sign(z): the denominator is (1+γ/2)·z + σ·(γ/2)·a + b_σ and, for s = R/stab(denominator)
    (zero where z = 0), R_x = (1+γ/2)·x⊙Aᵀ(s; w) + (γ/2)·|x|⊙Aᵀ(σ·s; |w|).
    """
    w, b = _weights(layer, "gamma")
    z, a = _split_contributions(layer, x, w, out)
    sign = torch.sign(out).to(R.dtype)
    denominator = torch.add(z * (1 + gamma / 2), sign * a, alpha=gamma / 2)
    if b is not None:
        b_up = layer.bias_term(b + gamma * positive(b)).to(R.dtype)
        b_dn = layer.bias_term(b + gamma * negative(b)).to(R.dtype)
        denominator += torch.where(out > 0, b_up, b_dn)
    s = divide(R, denominator, stabilizer).mul_(sign.abs())
    return (1 + gamma / 2) * x * layer.adjoint(s, w) + (gamma / 2) * x.abs() * layer.adjoint(s.mul_(sign), w.abs())


@rule(WEIGHTED, "zplus", needs=("x", "out"))
def zplus(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """z⁺: x⁺w⁺ (+b⁺) and x⁻w⁻ over their sum (alpha=1, beta=0 with negative inputs allowed)."""
    w, b = _weights(layer, "zplus")
    z, a = _split_contributions(layer, x, w, out)
    bias = 0 if b is None else layer.bias_term(positive(b))
    s = divide(R, (z + a) / 2 + bias, stabilizer)
    return (x * layer.adjoint(s, w) + x.abs() * layer.adjoint(s, w.abs())) / 2


@rule(WEIGHTED, "alphabeta", needs=("x", "out"), check=_alpha_beta)
def alphabeta(R, x, layer: LinearMap, out, *, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
    """α·(positive contributions) − β·(negative contributions), each normalised on its own."""
    w, b = _weights(layer, "alphabeta")
    z, a = _split_contributions(layer, x, w, out)
    b_pos = 0 if b is None else layer.bias_term(positive(b))
    b_neg = 0 if b is None else layer.bias_term(negative(b))
    s_pos = divide(R, (z + a) / 2 + b_pos, stabilizer)
    s_neg = divide(R, (z - a) / 2 + b_neg, stabilizer)
    return (
        x * layer.adjoint(alpha * s_pos - beta * s_neg, w)
        + x.abs() * layer.adjoint(alpha * s_pos + beta * s_neg, w.abs())
    ) / 2


@rule(WEIGHTED, "zbox", needs=("x", "out"), check=_box)
def zbox(R, x, layer: LinearMap, out, *, low, high, stabilizer: float = 1e-6):
    """z^B for bounded inputs l ≤ x ≤ h (low/high: floats or tensors broadcastable to x)."""
    w, b = _weights(layer, "zbox")
    wp, wn = positive(w), negative(w)
    lo = torch.as_tensor(low, dtype=x.dtype, device=x.device).expand(x.shape)
    hi = torch.as_tensor(high, dtype=x.dtype, device=x.device).expand(x.shape)
    z = out - layer.forward(lo, wp, positive(b)) - layer.forward(hi, wn, negative(b))
    s = divide(R, z, stabilizer)
    return x * layer.adjoint(s, w) - lo * layer.adjoint(s, wp) - hi * layer.adjoint(s, wn)


@rule(WEIGHTED, "flat")
def flat(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """Inputs and weights set to one, no bias: relevance spread evenly over each output's inputs."""
    w, _ = _weights(layer, "flat")
    ones_w = torch.ones_like(w, dtype=R.dtype)
    s = divide(R, layer.forward(ones_like_shape(x, R), ones_w, None), stabilizer)
    return layer.adjoint(s, ones_w)


@rule(WEIGHTED, "wsquare")
def wsquare(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """Inputs set to one, weights and bias squared."""
    w, b = _weights(layer, "wsquare")
    w2 = w.to(R.dtype) ** 2
    s = divide(R, layer.forward(ones_like_shape(x, R), w2, None if b is None else b.to(R.dtype) ** 2), stabilizer)
    return layer.adjoint(s, w2)
