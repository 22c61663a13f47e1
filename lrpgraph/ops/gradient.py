"""Rules written as modified gradients, for `verify`: a second computation of an explanation that shares no
kernel with the walker.

A *gradient form* replays one node forward under autograd, the way LXT writes AttnLRP: it returns the
node's value (unchanged) with a modified gradient — statistics detached, a product's gradient split
among its factors, epsilon as a detached division, gamma or alpha-beta as modified weights — such that
when the gradient arriving at the node's output is ρ = R / y, `x ⊙ gradient` at each input x is the
relevance the rule gives x. Gradient × input at the model's inputs is then the explanation.

Integer ids carry relevance too (through lookups, offsets, hashes): there the replay carries a float
*shadow* of each relevant integer tensor whose gradient is the relevance itself; a form on an integer
node returns the shadow of its output (`Replay.integer`).

Forms are registered next to their kernels with `@form(op_class, "rule")` and take `(call, **params)`.
A rule without a form (absLRP's per-op normalisation is not linear in R) is reported unverified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .registry import CLASSES, OpClass

FORMS: dict[tuple[str, str], Callable[..., Any]] = {}


def form(op_classes: OpClass | Iterable[OpClass], name: str):
    """Register the gradient form of rule `name` of one or several op classes."""
    classes = [op_classes] if isinstance(op_classes, OpClass) else list(op_classes)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op_class in classes:
            if CLASSES.get(op_class.name) is not op_class:
                raise RuntimeError(f"op class '{op_class.name}' is not declared")
            FORMS[(op_class.name, name)] = fn
        return fn

    return register


Key = str | tuple[str, int]  # an argument, or one element of a list argument


@dataclass
class Replay:
    """One node replayed under autograd: its op, its arguments (relevant tensors carry gradients, the others are
    detached constants; relevant integer tensors are their shadows), its output's plain value, its role.

    `integer`: the node computes integers from relevant ids; the form returns the shadow of its output.
    `ids`: the plain values of the arguments given as shadows, for forms that read ids as addresses.
    """

    op: Any
    args: dict[str, Any]
    relevant: dict[str, Any]
    out: Any
    adapter: Any
    role: Any = None
    integer: bool = False
    ids: dict[str, Any] = field(default_factory=dict)  # the plain values of arguments given as shadows of ids
    extra: list[tuple[Key, torch.Tensor]] = field(default_factory=list)
    zero_inputs: list[torch.Tensor] = field(default_factory=list)  # where an identity rule's x is 0 and y is not

    def get(self, key: Key) -> Any:
        if isinstance(key, tuple):
            return self.args[key[0]][key[1]]
        return self.args.get(key)

    def is_relevant(self, key: Key) -> bool:
        if isinstance(key, tuple):
            marks = self.relevant.get(key[0])
            return isinstance(marks, list) and bool(marks[key[1]])
        return bool(self.relevant.get(key))

    def relevant_keys(self) -> list[Key]:
        keys: list[Key] = []
        for name, mark in self.relevant.items():
            if isinstance(mark, list):
                keys += [(name, i) for i, m in enumerate(mark) if m]
            elif mark:
                keys.append(name)
        return keys

    def run(self, replace: dict[Key, Any] | None = None, detach: Iterable[Key] = ()) -> Any:
        """The op on the replay's arguments, some replaced, some detached (their gradient stops there)."""
        args = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in self.args.items()}
        updates = dict(replace or {})
        for key in detach:
            value = self.get(key)
            updates.setdefault(key, value.detach() if isinstance(value, torch.Tensor) else value)
        for key, value in updates.items():
            if isinstance(key, tuple):
                args[key[0]][key[1]] = value
            else:
                args[key] = value
        return call_op(self.op, args)

    def held(self, replace: dict[Key, Any] | None = None, detach: Iterable[Key] = ()) -> Any:
        """The op as its rules see it: statistics the rules hold constant (a norm's scale) detached."""
        return self.adapter.replay(self, dict(replace or {}), tuple(detach))

    def passed(self, x: torch.Tensor, out: torch.Tensor, kept_at_zero: bool = False) -> torch.Tensor:
        """The identity rule: out's value, x receives all of its relevance (gradient out/x). Where x is 0 and out
        is not, relevance is no gradient times x: those elements are noted for the replay to report, unless the
        rule keeps the relevance there itself (`kept_at_zero`: f(0) is a constant)."""
        zeros = (x.detach() == 0) & (out.detach() != 0)
        if not kept_at_zero and bool(zeros.any()):
            self.zero_inputs.append(zeros)
        return out.detach() + delta(x).to(out.dtype) * ratio(out, x.detach())

    def attribute(self, key: Key, leaf: torch.Tensor) -> None:
        """Relevance `leaf ⊙ gradient` belongs to the argument `key` as well (terms of rules that are not a
        gradient times the input, such as z^B's bounds or flat's ones): valid where that argument is an input."""
        self.extra.append((key, leaf))


def call_op(op: Any, args: dict[str, Any]) -> Any:
    """op(**args) for an ATen overload (arguments by schema name), op(*args) for other callables."""
    if isinstance(op, torch._ops.OpOverload):
        return op(**args)
    return op(*(args[str(i)] for i in range(len(args))))


def stabilized(z: torch.Tensor, eps: float, sign_aware: bool = True) -> torch.Tensor:
    """z + ε·sign(z) with sign(0) = +1, or z + ε: the rules' denominators, written again for the replay."""
    if not sign_aware:
        return z + eps
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def delta(y: torch.Tensor) -> torch.Tensor:
    """y − y, which is zero, but carries y's gradient; zero where y is infinite (a −inf mask) rather than NaN."""
    y0 = y.detach()
    return torch.where(torch.isfinite(y0), y - y0, torch.zeros_like(y0))


def rescaled(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y's value with its gradient multiplied by `scale` (held constant)."""
    return y.detach() + delta(y) * scale.detach().to(y.dtype)


def rescaled_as(out: torch.Tensor, g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """out's value with g's gradient multiplied by `scale` (g: another function of the same inputs)."""
    return out.detach() + delta(g) * scale.detach().to(g.dtype)


def ratio(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y / x, zero where x is zero (relevance there cannot be a gradient times x)."""
    x = x.detach().to(y.dtype)
    return torch.where(x == 0, torch.zeros_like(y), y.detach() / torch.where(x == 0, torch.ones_like(x), x))


def split(y: torch.Tensor, share: float) -> torch.Tensor:
    """y's value with `share` of its gradient."""
    return y.detach() + delta(y) * share


def share_of(out: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """out / denominator, zero where the denominator is: the factor a rule's division puts on ρ = R / out."""
    d = denominator.detach()
    share = torch.where(d == 0, torch.zeros_like(d), out.detach().to(d.dtype) / torch.where(d == 0, 1.0, d))
    return torch.nan_to_num(share, nan=0.0, posinf=0.0, neginf=0.0)  # an infinite output (a −inf mask) passes none
