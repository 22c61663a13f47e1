"""A residual's branch: the sub-graph that computes one term of a sum from the other, and its Jacobian.

In `y = x + b` with `b = f(x)` (a transformer block's attention or MLP, a ResNet block's convolutions) the graph
pass `flow/residuals.py` records the branch: the nodes that are descendants of the shortcut x and ancestors of b,
and the values they read from outside (weights, masks, position tables). A rule that needs the branch's
vector–Jacobian product `J_f(x)ᵀv` (absLRP's residual rule, ../shared/REFERENCE-METHODS.md) gets it from
`branch_vjp`, which replays those nodes forward and differentiates them: each op as its adapter's
`with_statistics_held` writes it (layer norm with mean and variance constant, softmax with max and denominator
constant, ops whose own autograd torch.func cannot run written out; every other op its plain derivative), in the
op's own memory layout. This is the one place a rule differentiates: the replay runs on fresh detached tensors
under `torch.func.vjp`, so it records nothing on autograd's tape, leaves every `.grad` alone, composes with `vmap`
(several relevance maps at once), and never touches the user's model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torch.fx.node import map_arg

from ..capture.node_args import normalised_args
from .gradient import call_op
from .table import lookup
from .tensors import laid_out_as


@dataclass(frozen=True, eq=False)
class Branch:
    """The nodes computing `output` from `shortcut` (graph order, `output` last) and the values they read besides
    the shortcut and each other (`inputs`: parameters, masks, constants, statistics a pass holds constant)."""

    shortcut: fx.Node
    output: fx.Node
    nodes: tuple[fx.Node, ...]
    inputs: tuple[fx.Node, ...]


@dataclass(frozen=True)
class Residual:
    """What a kernel that needs "branch" gets at a residual sum: the shortcut's index among the sum's terms, and
    `vjp(v)` = J(x)ᵀv, the Jacobian of the other term with respect to the shortcut's term applied to v (v in the
    branch term's shape, the result in the shortcut term's shape, both in v's dtype)."""

    shortcut: int
    vjp: Callable[[torch.Tensor], torch.Tensor]


def held_slope(op: Any, args: dict[str, Any], data: str, gain: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The op's value on `args`, differentiable in `args[data]` with the elementwise slope `gain(x)` (its statistics
    of x held constant), in the op's own memory layout; further outputs (saved statistics) constant. Written for
    `with_statistics_held` hooks."""
    x = args[data]
    out = call_op(op, {**args, data: x.detach()})
    first = out[0] if isinstance(out, (tuple, list)) else out
    slope = gain(x.detach()).to(first.dtype)
    held = laid_out_as(first.detach() + (x - x.detach()).to(first.dtype) * slope, first)
    if isinstance(out, (tuple, list)):
        return (held, *(t.detach() if isinstance(t, torch.Tensor) else t for t in out[1:]))
    return held


def _fresh(value: Any) -> Any:
    """A tensor with no history and no tie to autograd: the forward's inference tensors copied, others detached."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh(v) for v in value)
    return value


def branch_vjp(
    branch: Branch, values: Mapping[fx.Node, Any], scale: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ scale · J_f(x)ᵀv for the branch's f at the shortcut's value, `values` holding the shortcut's and the
    branch inputs' values (the step's role reads). The branch is replayed once, when this is called."""
    fixed = {node: _fresh(values[node]) for node in branch.inputs}

    def forward(x: torch.Tensor) -> torch.Tensor:
        env: dict[fx.Node, Any] = {branch.shortcut: x}
        for node in branch.nodes:
            args = map_arg(normalised_args(node), lambda n: env[n] if n in env else fixed[n])
            adapter = lookup(node.target)  # an op the plan runs a fallback for: its plain derivative
            held = call_op if adapter is None else adapter.with_statistics_held
            env[node] = held(node.target, args)
        return env[branch.output]

    out, pullback = torch.func.vjp(forward, _fresh(values[branch.shortcut]))

    def vjp(v: torch.Tensor) -> torch.Tensor:
        (grad,) = pullback(v.to(out.dtype))
        return grad.to(v.dtype) * scale

    return vjp
