"""Products of two relevant tensors contracted over an index: q·kᵀ, attn·v, bmm, matmul (op class "matmul").

Kernels are `fn(R, a, b, out, product, **params) -> (R_a, R_b)`; `product` is a `Bilinear` giving
the forward and the two adjoints of the contraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .gradient import Replay, delta, form, rescaled, share_of, stabilized
from .registry import declare, rule
from .tensors import stabilize, unbroadcast

MATMUL = declare("matmul", absorbs="rules")


@dataclass(frozen=True)
class Bilinear:
    """out = forward(a, b); adjoint_a(s, b) and adjoint_b(s, a) are its transposes in a and b."""

    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    adjoint_a: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    adjoint_b: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@rule(MATMUL, "uniform", needs=("a", "b", "out"), default=True)
def uniform(R, a, b, out, product: Bilinear, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """AttnLRP's uniform epsilon rule: each product term splits its share in half between a and b."""
    return shared(R, a, b, out, product, 2, epsilon, sign_aware)


@rule(MATMUL, "gradient", needs=("a", "b", "out"))
def gradient(R, a, b, out, product: Bilinear, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """Gradient × input: each factor gets the whole of its product terms (together twice R: not conservative);
    RelP's attention "by its plain gradient"."""
    return shared(R, a, b, out, product, 1, epsilon, sign_aware)


def shared(R, a, b, out, product: Bilinear, halves: int, epsilon: float, sign_aware: bool):
    """Each product term's relevance ÷ `halves` to each factor: the uniform rule (2) or gradient × input (1)."""
    s = R / stabilize(halves * out.to(R.dtype), epsilon, sign_aware)
    ra = a * unbroadcast(product.adjoint_a(s, b.to(s.dtype)), a.shape)
    rb = b * unbroadcast(product.adjoint_b(s, a.to(s.dtype)), b.shape)
    return ra, rb


def with_bias_share(call: Replay, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """y plus, where beta·bias + alpha·a·b has a bias that carries relevance, the bias's epsilon share as a gradient
    (y must hold the bias constant)."""
    key = call.adapter.bias
    if not key or call.args.get(key) is None or not call.is_relevant(key):
        return y
    bias = call.args[key]
    beta = float(call.args.get("beta", 1.0))
    return y + beta * delta(bias) * share_of(call.out, stabilized(call.out.detach(), epsilon))


def bias_key(call: Replay) -> list[str]:
    """The bias argument of beta·bias + alpha·a·b, if the op has one: the product's forms hold it constant."""
    key = call.adapter.bias
    return [key] if key and call.args.get(key) is not None else []


def product_term(call: Replay, epsilon: float) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(the product a·b the bilinear rules split, the share of ρ·out it receives): beta·bias + alpha·a·b (addmm,
    baddbmm) first gives the bias its epsilon share, as the walker's adapter does; without a bias, (out, 1)."""
    key = call.adapter.bias
    bias = call.args.get(key) if key else None
    if bias is None:
        return call.out.detach(), 1.0
    beta, alpha = float(call.args.get("beta", 1.0)), float(call.args.get("alpha", 1.0))
    out = call.out.detach()
    term = out - beta * bias.detach()
    return term / alpha, share_of(term, stabilized(out, epsilon)) / alpha


@form(MATMUL, "uniform")
def uniform_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """Both factors get ρ·(what the product gets)/stab(2·product): half each, as a gradient."""
    return shared_form(call, 2, epsilon, sign_aware)


@form(MATMUL, "gradient")
def gradient_form(call: Replay, *, epsilon: float = 1e-6, sign_aware: bool = True):
    """The product's own gradient, ρ·(what the product gets)/stab(product)."""
    return shared_form(call, 1, epsilon, sign_aware)


def shared_form(call: Replay, halves: int, epsilon: float, sign_aware: bool):
    product, share = product_term(call, epsilon)
    scale = share_of(call.out, stabilized(halves * product, epsilon, sign_aware)) * share
    return with_bias_share(call, rescaled(call.held(detach=bias_key(call)), scale), epsilon)
