"""Conditional relevance (CRP, Achtibat et al. 2023): the input relevance of chosen units at latent points.

A condition keeps, at a recorded point, the relevance of some units (channels, neurons, heads — a mask) and
drops the rest, and then follows only what passes through it: the walk restarts at the point, seeded with the
masked relevance, so relevance that bypasses the point (a residual shortcut) is not counted. K conditions are
K maps of one batched walk over the same forward; conditions at several points are applied in walk order, each
walk starting where the previous one recorded. The masks of a complete partition of a point's units sum to 1, so
their conditional relevances sum to the relevance that passed through the point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx

from ..errors import InputError
from ..propagate.plan import Plan
from ..propagate.walker import BatchedWalker, WalkResult
from .output import ForwardPass

Condition = Sequence[int] | torch.Tensor  # unit indices along the point's unit dim, or a mask of its sample shape


def unit_dim(shape: Sequence[int]) -> int:
    """Which dim of a per-sample shape holds the units: channels of a feature map [C, H, W], otherwise the last
    (features of [T, H], neurons of [H])."""
    return 0 if len(shape) >= 3 else len(shape) - 1


def masks(point: str, conditions: Sequence[Condition], shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """The K masks [K, *shape] of a point's conditions (index lists along its unit dim, or masks broadcast to the
    sample shape)."""
    if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence) or not conditions:
        raise InputError(f"conditions[{point!r}] must be a non-empty list of conditions (unit indices or masks)")
    out = torch.zeros((len(conditions), *shape), dtype=dtype)
    dim = unit_dim(shape)
    units = shape[dim] if shape else 1
    for k, condition in enumerate(conditions):
        if isinstance(condition, torch.Tensor) and condition.dim() > 0 and condition.is_floating_point():
            try:
                out[k] = condition.to(dtype).expand(tuple(shape))
            except RuntimeError:
                raise InputError(
                    f"conditions[{point!r}][{k}]: a mask of shape {tuple(condition.shape)} does not broadcast to the "
                    f"point's shape per sample {tuple(shape)}"
                ) from None
            continue
        if isinstance(condition, torch.Tensor) and condition.dtype == torch.bool:
            raise InputError(f"conditions[{point!r}][{k}]: pass a boolean mask as floats (mask.float())")
        index = torch.as_tensor(condition).reshape(-1)
        if index.is_floating_point() or index.numel() == 0:
            raise InputError(f"conditions[{point!r}][{k}] must be unit indices or a float mask, not {condition!r}")
        if bool(((index < 0) | (index >= units)).any()):
            raise InputError(
                f"conditions[{point!r}][{k}]: unit indices {index.tolist()} out of range: the point has {units} units "
                f"along dim {dim + 1} of its shape {(-1, *shape)}"
            )
        out[k].index_fill_(dim, index.long(), 1.0)
    return out


def conditional(
    plan: Plan, forward: ForwardPass, points: Mapping[fx.Node, torch.Tensor], latent: dict[fx.Node, Any]
) -> WalkResult:
    """The walks of K conditions: `points` maps each conditioned node to its masks [K, *sample shape]; `latent` holds
    the relevance the first walk recorded there (it must have retained the stored activations)."""
    order = {node: i for i, node in enumerate(plan.order)}
    chain = sorted(points, key=order.__getitem__)
    first = latent.get(chain[0])
    R: torch.Tensor | None = None if first is None else _dense(first)[None]
    result = WalkResult({}, {}, {})
    for i, node in enumerate(chain):
        last = i == len(chain) - 1
        following = frozenset() if last else frozenset({chain[i + 1]})
        if R is None:  # no relevance reaches this point: every condition explains nothing
            return result
        seed = points[node].to(device=R.device, dtype=R.dtype).unsqueeze(1) * R
        walker = BatchedWalker(plan, forward.schedule, forward.store, following)
        result = walker.run(seed, retain=not last, start=node)
        if not last:
            nxt = result.latent.get(chain[i + 1])
            R = None if nxt is None else _dense(nxt)
    return result


def _dense(r: Any) -> torch.Tensor:
    return r.dense() if hasattr(r, "dense") else r
