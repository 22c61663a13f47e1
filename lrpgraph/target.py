"""Turn a user's `target` into the seed relevance at the explained output.

A class or token id seeds the output's value at that index (so relevance sums to the logit); for
sequence outputs [B, T, V] the index is at each sample's last real position. A seed tensor or a
function of the output is used as given — pass a one-hot tensor for Zennit's unit seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .errors import TargetError

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | tuple | None


def make_seed(target: Target, out: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """The relevance placed on `out`; `positions` [B] are the last real positions of sequence outputs."""
    if callable(target) and not isinstance(target, torch.Tensor):
        seed = target(out)
        if not isinstance(seed, torch.Tensor) or tuple(seed.shape) != tuple(out.shape):
            shape = tuple(seed.shape) if isinstance(seed, torch.Tensor) else type(seed).__name__
            raise TargetError(
                f"the target function must return a tensor shaped like the output {tuple(out.shape)}, got {shape}"
            )
        return seed.to(out.dtype)
    if (
        isinstance(target, torch.Tensor)
        and target.shape == out.shape
        and target.dim() > 0
        and (target.is_floating_point() or out.dim() > 1)
    ):
        return target.to(device=out.device, dtype=out.dtype)
    if isinstance(target, tuple):
        return _at_index(out, target)
    ids = _class_ids(target, out)
    return _at_classes(out, ids, positions)


def _class_ids(target: Any, out: torch.Tensor) -> torch.Tensor:
    if out.dim() < 2:
        raise TargetError(
            "a class id needs an output shaped [batch, classes] or [batch, positions, classes], "
            f"got {tuple(out.shape)}; pass an index tuple, a seed tensor or a function instead"
        )
    batch, classes = out.shape[0], out.shape[-1]
    if target is None:
        flat = out if out.dim() == 2 else out[:, -1]
        return flat.argmax(-1)
    if isinstance(target, bool):
        raise TargetError("target must be a class id, not a bool")
    if isinstance(target, int):
        ids = torch.full((batch,), target, dtype=torch.long)
    else:
        try:
            ids = torch.as_tensor(target).long().reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TargetError(f"cannot read target {target!r} as class ids") from None
        if ids.numel() != batch:
            raise TargetError(f"{ids.numel()} target ids given for a batch of {batch}")
    bad = ids[(ids < 0) | (ids >= classes)]
    if bad.numel():
        raise TargetError(
            f"target id {int(bad[0])} is out of range for {classes} classes (output shape {tuple(out.shape)})"
        )
    return ids.to(out.device)


def _at_classes(out: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    if out.dim() not in (2, 3):
        raise TargetError(f"class ids need an output of 2 or 3 dimensions, got {tuple(out.shape)}; pass an index tuple")
    seed = torch.zeros_like(out)
    rows = torch.arange(out.shape[0], device=out.device)
    if out.dim() == 2:
        seed[rows, ids] = out[rows, ids]
    else:
        pos = positions.to(out.device) if positions is not None else torch.full_like(rows, out.shape[1] - 1)
        seed[rows, pos, ids] = out[rows, pos, ids]
    return seed


def _at_index(out: torch.Tensor, index: tuple) -> torch.Tensor:
    if len(index) != out.dim() or not all(isinstance(i, int) for i in index):
        raise TargetError(
            f"an index target needs {out.dim()} ints for an output of shape {tuple(out.shape)}, got {index!r}"
        )
    for i, (k, n) in enumerate(zip(index, out.shape, strict=True)):
        if not -n <= k < n:
            raise TargetError(
                f"index {k} is out of range for dimension {i} of size {n} (output shape {tuple(out.shape)})"
            )
    seed = torch.zeros_like(out)
    seed[index] = out[index]
    return seed


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-zero entry (the last real token, for left or right padding)."""
    flipped = (mask != 0).flip(-1).to(torch.int8)
    return mask.shape[-1] - 1 - flipped.argmax(-1)
