"""Rule parameters: every keyword a rule kernel takes is declared here once, with its type and range.

Rule sets validate their values when they are built (so `epsilon="abc"` or `gamma=-1` is an error
naming the parameter before any forward runs); a kernel taking an undeclared keyword fails to
register.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Param:
    """What a parameter means, and what values it takes: a real number ≥ `minimum`, a bound, or a flag."""

    meaning: str
    minimum: float | None = 0.0
    tensor: bool = False  # a float, or a tensor broadcastable to the layer's input
    flag: bool = False  # true or false
    optional: bool = False  # None allowed (its documented default behaviour)


PARAMS: dict[str, Param] = {
    "epsilon": Param("stabilizer of the epsilon rule and of bilinear and normalisation rules"),
    "stabilizer": Param("stabilizer of rules that have no epsilon of their own (Norm, gamma, z⁺, αβ, z^B, flat, w²)"),
    "gamma": Param("how much the gamma rule favours positive contributions"),
    "alpha": Param("weight of positive contributions (αβ)"),
    "beta": Param("weight of negative contributions (αβ)"),
    "low": Param("lowest value the input can take (z^B)", minimum=None, tensor=True),
    "high": Param("highest value the input can take (z^B)", minimum=None, tensor=True),
    "sign_aware": Param("stabilize as z + ε·sign(z) (Zennit, LXT) rather than z + ε (the PA-LRP authors)", flag=True),
    "logit_epsilon": Param(
        "stabilizer of the q·kᵀ product inside fused attention (None: its limit ε → 0, which needs no pass of its own)",
        optional=True,
    ),
}


def check_declared(where: str, params: dict[str, Any]) -> None:
    """Registration-time check that a kernel only takes declared parameters."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise RuntimeError(f"kernel {where} takes undeclared parameter(s) {', '.join(unknown)}; declare them in PARAMS")


def validate(name: str, value: Any) -> Any:
    """The value, normalised (numbers → float); ValueError saying what is wrong with it."""
    spec = PARAMS.get(name)
    if spec is None or (spec.optional and value is None):
        return value
    if spec.flag:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value
    if spec.tensor and isinstance(value, torch.Tensor):
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be a finite float tensor")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kinds = "a number or a float tensor" if spec.tensor else "a number"
        raise ValueError(f"{name} must be {kinds}, not {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, not {number}")
    if spec.minimum is not None and number < spec.minimum:
        raise ValueError(f"{name} must be ≥ {spec.minimum:g} ({spec.meaning}), not {number:g}")
    return number
