"""The classic LRP rules for maps linear in x (linear, conv, matmul with weights; sums and pools).

Each kernel is `fn(R, x, layer, out, **params) -> R_x` where `layer` is a `LinearMap` (forward and
adjoint) and `out` the node's output z. Formulas: RULES.md; they match Zennit's rules term by term
(the modified biases included), so the presets reproduce Zennit's composites.
"""

from __future__ import annotations

import torch

from ..registry import rule
from .layers import LinearMap
from .tensors import divide, negative, ones_like_shape, positive

WEIGHTED = ("linear", "conv")


@rule((*WEIGHTED, "norm", "batchnorm"), "epsilon", needs=("x", "out"), default=True)
def epsilon(R, x, layer: LinearMap, out, *, epsilon: float = 1e-6):
    """R_i = x_i Σ_j A_ij R_j / stab(z_j); the bias keeps its share."""
    return x * layer.adjoint(divide(R, out, epsilon), layer.weight)


@rule(("sum", "avgpool"), "norm", needs=("x", "out"), default=True)
def norm(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """Zennit's Norm: proportional to each input's contribution to the sum or average."""
    return x * layer.adjoint(divide(R, out, stabilizer), None)


def _weights(layer: LinearMap, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if layer.weight is None:
        raise TypeError(f"rule '{name}' needs a layer with weights")
    return layer.weight, layer.bias


@rule(WEIGHTED, "gamma", needs=("x", "out"))
def gamma(R, x, layer: LinearMap, out, *, gamma: float = 0.25, stabilizer: float = 1e-6):
    """Generalised gamma (Zennit): w+γw⁺ on x⁺ and w+γw⁻ on x⁻ where z>0, swapped where z<0."""
    w, b = _weights(layer, "gamma")
    xp, xn = positive(x), negative(x)
    w_up, w_dn = w + gamma * positive(w), w + gamma * negative(w)
    b_up = None if b is None else b + gamma * positive(b)
    b_dn = None if b is None else b + gamma * negative(b)
    z_pos = layer.forward(xp, w_up, b_up) + layer.forward(xn, w_dn, None)
    z_neg = layer.forward(xp, w_dn, b_dn) + layer.forward(xn, w_up, None)
    s_pos = (out > 0).to(R.dtype) * divide(R, z_pos, stabilizer)
    s_neg = (out < 0).to(R.dtype) * divide(R, z_neg, stabilizer)
    return xp * (layer.adjoint(s_pos, w_up) + layer.adjoint(s_neg, w_dn)) + xn * (
        layer.adjoint(s_pos, w_dn) + layer.adjoint(s_neg, w_up)
    )


@rule(WEIGHTED, "zplus", needs=("x",))
def zplus(R, x, layer: LinearMap, out, *, stabilizer: float = 1e-6):
    """z⁺: x⁺w⁺ (+b⁺) and x⁻w⁻ over their sum (alpha=1, beta=0 with negative inputs allowed)."""
    w, b = _weights(layer, "zplus")
    xp, xn, wp, wn = positive(x), negative(x), positive(w), negative(w)
    s = divide(R, layer.forward(xp, wp, positive(b)) + layer.forward(xn, wn, None), stabilizer)
    return xp * layer.adjoint(s, wp) + xn * layer.adjoint(s, wn)


@rule(WEIGHTED, "alphabeta", needs=("x",))
def alphabeta(R, x, layer: LinearMap, out, *, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
    """α·(positive contributions) − β·(negative contributions), each normalised on its own."""
    if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
        raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
    w, b = _weights(layer, "alphabeta")
    xp, xn, wp, wn = positive(x), negative(x), positive(w), negative(w)
    s_pos = divide(R, layer.forward(xp, wp, positive(b)) + layer.forward(xn, wn, None), stabilizer)
    s_neg = divide(R, layer.forward(xp, wn, negative(b)) + layer.forward(xn, wp, None), stabilizer)
    return alpha * (xp * layer.adjoint(s_pos, wp) + xn * layer.adjoint(s_pos, wn)) - beta * (
        xp * layer.adjoint(s_neg, wn) + xn * layer.adjoint(s_neg, wp)
    )


@rule(WEIGHTED, "zbox", needs=("x", "out"))
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
