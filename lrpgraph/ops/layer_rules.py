"""The classic LRP rules for maps linear in x: layers with weights, sums and average pools.

Op classes "linear" (linear layers and matrix products with a constant operand) and "conv". Each
kernel is `fn(R, x, layer, out, **params) -> R_x` where `layer` is a `LinearMap` (forward and
adjoint) and `out` the node's output z. Formulas: RULES.md (in ../shared/, beside the repository); they
match Zennit's rules term by term (the modified biases included), so the presets reproduce Zennit's
composites. Each kernel's gradient form (for `verify`) follows it.
"""

from __future__ import annotations

import torch

from .complex import COMPLEX
from .gradient import Replay, delta, form, rescaled, rescaled_as, share_of, stabilized
from .linear_maps import LinearMap
from .normalisation import BATCHNORM, NORM
from .pooling import AVGPOOL, SUM
from .registry import declare, rule
from .tensors import divide, negative, ones_like_shape, positive, writable

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
    c = layer.adjoint(divide(R, out, epsilon, sign_aware), layer.weight)
    return c.mul_(x) if writable(c, x) and c._base is None and c.is_contiguous() else x * c


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


# --- the same rules as modified gradients (`gradient.py`), for verify ---


def _first(y):
    """The output that carries relevance (norm ops also return their statistics)."""
    return y[0] if isinstance(y, (tuple, list)) else y


def _with_first(y, first):
    return (
        (first, *(t.detach() if isinstance(t, torch.Tensor) else t for t in y[1:])) if isinstance(y, tuple) else first
    )


@form((*WEIGHTED, NORM, BATCHNORM), "epsilon")
def epsilon_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """ρ·z/stab(z) through the layer (a norm with its scale held)."""
    y, out = call.held(), _first(call.out)
    return _with_first(y, rescaled(_first(y), share_of(out, stabilized(out, epsilon, sign_aware))))


class _Layer:
    """The node's layer on other inputs, weights and biases (no bias: zeros), for the weight-modifying rules."""

    def __init__(self, call: Replay, name: str):
        self.call = call
        self.data, self.weight_key, self.bias_key = call.adapter.layer_keys(call.args, call.relevant)
        if self.weight_key is None:
            raise TypeError(f"rule '{name}' needs a layer with weights")
        self.x = call.get(self.data)
        self.w = call.get(self.weight_key).detach()
        bias = call.get(self.bias_key) if self.bias_key is not None else None
        self.b = None if bias is None else bias.detach()

    def __call__(self, x, w, b=None):
        replace = {self.data: x, self.weight_key: w}
        if self.bias_key is not None and self.b is not None:
            replace[self.bias_key] = torch.zeros_like(self.b) if b is None else b
        return _first(self.call.held(replace))

    def bias_term(self, b):
        """The bias b' broadcast to the output (the layer on zero inputs)."""
        return self(torch.zeros_like(self.x.detach()), self.w, b)


@form(WEIGHTED, "gamma")
def gamma_form(call: Replay, *, gamma: float = 0.25, stabilizer: float = 1e-6):
    """(1+γ/2)·A(x; w) + (γ/2)·σ·A(|x|; |w|), its gradient scaled by z/stab(denominator)."""
    layer, out = _Layer(call, "gamma"), _first(call.out)
    x, w, b = layer.x, layer.w, layer.b
    sign = torch.sign(out)
    denominator = (1 + gamma / 2) * layer(x.detach(), w) + sign * (gamma / 2) * layer(x.detach().abs(), w.abs())
    if b is not None:
        up, down = layer.bias_term(b + gamma * b.clamp(min=0)), layer.bias_term(b + gamma * b.clamp(max=0))
        denominator = denominator + torch.where(out > 0, up, down)
    g = (1 + gamma / 2) * layer(x, w) + (gamma / 2) * sign * layer(x.abs(), w.abs())
    return rescaled_as(out, g, share_of(out, stabilized(denominator, stabilizer)) * sign.abs())


@form(WEIGHTED, "zplus")
def zplus_form(call: Replay, *, stabilizer: float = 1e-6):
    layer, out = _Layer(call, "zplus"), _first(call.out)
    x, w, b = layer.x, layer.w, layer.b
    denominator = (layer(x.detach(), w) + layer(x.detach().abs(), w.abs())) / 2
    if b is not None:
        denominator = denominator + layer.bias_term(b.clamp(min=0))
    g = (layer(x, w) + layer(x.abs(), w.abs())) / 2
    return rescaled_as(out, g, share_of(out, stabilized(denominator, stabilizer)))


@form(WEIGHTED, "alphabeta")
def alphabeta_form(call: Replay, *, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
    """α·(positive part's gradient)/its sum − β·(negative part's)/its sum."""
    layer, out = _Layer(call, "alphabeta"), _first(call.out)
    x, w, b = layer.x, layer.w, layer.b
    z, a = layer(x.detach(), w), layer(x.detach().abs(), w.abs())
    positive_sum, negative_sum = (z + a) / 2, (z - a) / 2
    if b is not None:
        positive_sum = positive_sum + layer.bias_term(b.clamp(min=0))
        negative_sum = negative_sum + layer.bias_term(b.clamp(max=0))
    up = (layer(x, w) + layer(x.abs(), w.abs())) / 2
    down = (layer(x, w) - layer(x.abs(), w.abs())) / 2
    scale_up = alpha * share_of(out, stabilized(positive_sum, stabilizer))
    scale_down = beta * share_of(out, stabilized(negative_sum, stabilizer))
    return out.detach() + delta(up) * scale_up - delta(down) * scale_down


@form(WEIGHTED, "zbox")
def zbox_form(call: Replay, *, low, high, stabilizer: float = 1e-6):
    """A(x; w) − A(l; w⁺) − A(h; w⁻) with the bounds l, h as inputs too: their relevance is x's."""
    layer, out = _Layer(call, "zbox"), _first(call.out)
    x, w, b = layer.x, layer.w, layer.b
    lo = torch.as_tensor(low, dtype=x.dtype, device=x.device).expand(x.shape).clone().requires_grad_()
    hi = torch.as_tensor(high, dtype=x.dtype, device=x.device).expand(x.shape).clone().requires_grad_()
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bp, bn = (None, None) if b is None else (b.clamp(min=0), b.clamp(max=0))
    denominator = out.detach() - layer(lo.detach(), wp, bp) - layer(hi.detach(), wn, bn)
    g = layer(x, w) - layer(lo, wp) - layer(hi, wn)
    call.attribute(layer.data, lo)
    call.attribute(layer.data, hi)
    return rescaled_as(out, g, share_of(out, stabilized(denominator, stabilizer)))


def _ones_input(call: Replay, layer: _Layer, weight, bias, stabilizer: float):
    """flat and w²: the layer on an input of ones; the ones' relevance is x's."""
    out = _first(call.out)
    ones = torch.ones_like(layer.x.detach()).requires_grad_()
    denominator = layer(ones.detach(), weight, bias)
    call.attribute(layer.data, ones)
    return rescaled_as(out, layer(ones, weight), share_of(out, stabilized(denominator, stabilizer)))


@form(WEIGHTED, "flat")
def flat_form(call: Replay, *, stabilizer: float = 1e-6):
    layer = _Layer(call, "flat")
    return _ones_input(call, layer, torch.ones_like(layer.w), None, stabilizer)


@form(WEIGHTED, "wsquare")
def wsquare_form(call: Replay, *, stabilizer: float = 1e-6):
    layer = _Layer(call, "wsquare")
    return _ones_input(call, layer, layer.w**2, None if layer.b is None else layer.b**2, stabilizer)
