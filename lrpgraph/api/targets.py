"""Turn a user's `target` into the seed relevance at the explained output.

A class or token id seeds the output's value at that index (so relevance sums to the logit); for
sequence outputs [B, T, V] the index is at each sample's last real position. A seed tensor or a
function of the output is used as given — pass a one-hot tensor for Zennit's unit seed.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine.output import Output
from ..errors import TargetError
from ..ops.sparse import RowSparse

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | tuple | None
Seed = torch.Tensor | RowSparse


class Targets(list):
    """K targets explained in one pass: `Targets([3, 7, (0, 5, 12), seed_fn])`, each any single target form.

    A 2-D tensor (or nested list) of ids shaped [batch, K] means K class or token ids per sample.
    """


@dataclass(frozen=True)
class TokenAt:
    """For each sample b, the logit of token `ids[b]` at position `positions[b]` of [batch, positions, vocab]
    logits — e.g. each generated token at the position that produced it. An id of -1 explains nothing there."""

    positions: torch.Tensor | Sequence[int]
    ids: torch.Tensor | Sequence[int]


STYLES = ("value", "one-hot", "contrastive", "passes")


def seeds(
    target: Any, out: Output, positions: torch.Tensor | None = None, style: str = "value"
) -> tuple[Seed, int | None]:
    """(seed, K): the seed of one target shaped like `out`, or of K targets shaped [K, *out.shape].

    style: what a class id (or index tuple) seeds — "value" the output's value there, "one-hot" 1,
    "contrastive" e_t minus the mean of the other classes (one pass), "passes" the two seeds e_t and
    (1 − e_t)/(C − 1) walked as two maps (absLRP's contrastive map, combined by `engine/contrast.py`).
    """
    if style == "passes":
        if isinstance(target, Targets) or _is_id_matrix(target, out):
            raise TargetError("absLRP's contrastive map explains one target at a time, not Targets")
        return _stack([make_seed(target, out, positions, "one-hot"), make_seed(target, out, positions, "others")]), 2
    if isinstance(target, Targets):
        if not target:
            raise TargetError("Targets needs at least one target")
        return _stack([make_seed(t, out, positions, style) for t in target]), len(target)
    if _is_id_matrix(target, out):
        ids = torch.as_tensor(target).long()
        parts = [make_seed(ids[:, k], out, positions, style) for k in range(ids.shape[1])]
        return _stack(parts), ids.shape[1]
    return make_seed(target, out, positions, style), None


def _stack(parts: list[Seed]) -> Seed:
    if all(isinstance(p, RowSparse) for p in parts):
        return RowSparse.stack(parts)
    return torch.stack([p.dense() if isinstance(p, RowSparse) else p for p in parts])


def _is_id_matrix(target: Any, out: Output) -> bool:
    if isinstance(target, torch.Tensor):
        return target.dim() == 2 and not target.is_floating_point() and tuple(target.shape) != tuple(out.shape)
    return (
        isinstance(target, list)
        and bool(target)
        and all(isinstance(row, (list, tuple)) for row in target)
        and all(isinstance(i, int) for row in target for i in row)
    )


def make_seed(target: Target, out: Output, positions: torch.Tensor | None = None, style: str = "value") -> Seed:
    """The relevance placed on `out`; `positions` [B] are the last real positions of sequence outputs.

    A seed tensor or a function of the output is used as given; a class id or index tuple seeds by
    `style` (see `seeds`; "others" is the second of absLRP's passes, (1 − e_t)/(C − 1)).
    """
    given = callable(target) or (isinstance(target, torch.Tensor) and target.shape == out.shape and target.dim() > 0)
    if given and style not in ("value", "one-hot"):
        raise TargetError("contrastive=True needs a class id (or an index tuple), not a seed tensor or function")
    if callable(target) and not isinstance(target, torch.Tensor):
        seed = target(out)
        if not isinstance(seed, torch.Tensor) or tuple(seed.shape) != tuple(out.shape):
            shape = tuple(seed.shape) if isinstance(seed, torch.Tensor) else type(seed).__name__
            raise TargetError(
                f"the target function must return a tensor shaped like the output {tuple(out.shape)}, got {shape}"
            )
        return seed.to(dtype=out.dtype, copy=True)  # never the caller's (or the output's) tensor itself
    if (
        isinstance(target, torch.Tensor)
        and target.shape == out.shape
        and target.dim() > 0
        and (target.is_floating_point() or len(out.shape) > 1)
    ):
        return target.to(device=out.device, dtype=out.dtype, copy=True)
    if style in ("contrastive", "others") and (len(out.shape) < 2 or out.shape[-1] < 2):
        raise TargetError(f"a contrastive seed needs an output with two or more classes, got shape {tuple(out.shape)}")
    values = out if style == "value" else _ones_like(out)
    if isinstance(target, TokenAt):
        one_hot = _token_at(values, target)
    elif isinstance(target, tuple):
        one_hot = _at_index(values, target)
    else:
        one_hot = _at_classes(values, _class_ids(target, out, positions), positions)
    if style in ("value", "one-hot"):
        return one_hot
    others = 1 / (out.shape[-1] - 1)  # e_t·(1 + others) − others in the selected rows: e_t − (1 − e_t)/(C − 1)
    keep, scale = (1 + others, -others) if style == "contrastive" else (-others, others)
    if isinstance(one_hot, RowSparse):
        return one_hot.with_values(one_hot.values * keep + scale)
    rows = one_hot.any(-1, keepdim=True).to(out.dtype)
    return one_hot * keep + rows * scale


def _class_ids(target: Any, out: Output, positions: torch.Tensor | None) -> torch.Tensor:
    if len(out.shape) < 2:
        raise TargetError(
            "a class id needs an output shaped [batch, classes] or [batch, positions, classes], "
            f"got {tuple(out.shape)}; pass an index tuple, a seed tensor or a function instead"
        )
    batch, classes = out.shape[0], out.shape[-1]
    if target is None:  # the predicted class, or the token predicted at each sample's last real position
        flat = out if len(out.shape) == 2 else _rows(out, _last_rows(out.shape, positions))
        return flat.argmax(-1)
    ids = _integers(target)
    if ids.dim() == 0:
        ids = ids.expand(batch)
    elif ids.dim() != 1 or ids.numel() != batch:
        raise TargetError(f"{ids.numel()} target ids of shape {tuple(ids.shape)} given for a batch of {batch}")
    bad = ids[(ids < 0) | (ids >= classes)]
    if bad.numel():
        raise TargetError(
            f"target id {int(bad[0])} is out of range for {classes} classes (output shape {tuple(out.shape)})"
        )
    return ids.to(out.device)


def _integers(target: Any) -> torch.Tensor:
    """Class ids as a long tensor: ints (Python, numpy, 0-d or 1-d integer tensors) or lists of them, nothing else."""
    if isinstance(target, (bool, np.bool_)):
        raise TargetError("target must be a class id, not a bool")
    if isinstance(target, numbers.Integral):
        return torch.tensor(int(target))
    if isinstance(target, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(target)
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise TargetError(
                f"target ids must be integers, got a {tensor.dtype} tensor of shape {tuple(tensor.shape)}; "
                "a float seed tensor must have the output's shape"
            )
        return tensor.long().cpu()
    if isinstance(target, (list, tuple)) and all(
        isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)) for i in target
    ):
        return torch.tensor([int(i) for i in target], dtype=torch.long)
    raise TargetError(
        f"cannot read target {target!r} as class ids: pass an int, a list or 1-D integer tensor of ids, an index "
        "tuple, a seed tensor shaped like the output, or a function of the output"
    )


def _at_classes(out: Output, ids: torch.Tensor, positions: torch.Tensor | None) -> Seed:
    if len(out.shape) not in (2, 3):
        raise TargetError(f"class ids need an output of 2 or 3 dimensions, got {tuple(out.shape)}; pass an index tuple")
    rows = torch.arange(out.shape[0], device=out.device)
    if len(out.shape) == 2:
        seed = torch.zeros_like(out)
        seed[rows, ids] = out[rows, ids]
        return seed
    index = _last_rows(out.shape, positions).to(out.device)  # rows of the [batch·positions, vocab] view
    return _merge_rows(index, _picked(_rows(out, index), ids), out.shape)


def _token_at(out: Output, target: TokenAt) -> RowSparse:
    if len(out.shape) != 3:
        raise TargetError(f"TokenAt needs [batch, positions, vocab] logits, got shape {tuple(out.shape)}")
    batch, length, vocab = out.shape
    positions, ids = _integers(target.positions).reshape(-1), _integers(target.ids).reshape(-1)
    if positions.numel() != batch or ids.numel() != batch:
        raise TargetError(f"TokenAt needs one position and one id per sample ({batch}), got {positions.numel()} "
                          f"and {ids.numel()}")  # fmt: skip
    if bool(((positions < 0) | (positions >= length)).any()) or bool(((ids < -1) | (ids >= vocab)).any()):
        raise TargetError(f"TokenAt positions must lie in 0..{length - 1} and ids in 0..{vocab - 1} (or -1)")
    rows = torch.arange(batch)[ids >= 0]
    index = (rows * length + positions[ids >= 0]).to(out.device)
    return _merge_rows(index, _picked(_rows(out, index), ids[ids >= 0].to(out.device)), out.shape)


def _picked(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Zeros shaped like `rows` [n, C] holding, in row i, its value at class ids[i]."""
    values = torch.zeros_like(rows)
    at = torch.arange(len(rows), device=rows.device)
    values[at, ids] = rows[at, ids]
    return values


def _merge_rows(index: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> RowSparse:
    unique, inverse = torch.unique(index, return_inverse=True)
    merged = values.new_zeros((len(unique), values.shape[-1])).index_add_(0, inverse, values)
    return RowSparse(unique, merged, shape)


def _at_index(out: Output, index: tuple) -> torch.Tensor | RowSparse:
    if len(index) != len(out.shape) or not all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index
    ):
        raise TargetError(
            f"an index target needs {len(out.shape)} ints for an output of shape {tuple(out.shape)}, got {index!r}"
        )
    index = tuple(int(i) for i in index)
    for i, (k, n) in enumerate(zip(index, out.shape, strict=True)):
        if not -n <= k < n:
            raise TargetError(
                f"index {k} is out of range for dimension {i} of size {n} (output shape {tuple(out.shape)})"
            )
    if len(out.shape) == 3:
        b, t, c = (k % n for k, n in zip(index, out.shape, strict=True))
        row = torch.tensor([b * out.shape[1] + t], device=out.device)
        return RowSparse(row, _picked(_rows(out, row), torch.tensor([c], device=out.device)), out.shape)
    seed = torch.zeros_like(out)
    seed[index] = out[index]
    return seed


def _ones_like(out: Output) -> Output:
    return out.with_values(torch.ones_like(out.values)) if isinstance(out, RowSparse) else torch.ones_like(out)


def _rows(out: Output, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` [n] of [B, T, C] logits viewed as [B·T, C]: [n, C] (of logits computed at some rows only,
    a RowSparse, those rows)."""
    if isinstance(out, RowSparse):
        return out.at(index)
    return out.reshape(-1, out.shape[-1]).index_select(0, index.to(out.device))


def _last_rows(shape: torch.Size, positions: torch.Tensor | None) -> torch.Tensor:
    """Each sample's row at its last real position (or the last position) in the [B·T, C] view of [B, T, C]."""
    batch, length = shape[0], shape[1]
    pos = positions.cpu() if positions is not None else torch.full((batch,), length - 1)
    return torch.arange(batch) * length + pos


class _RowProbe(RowSparse):
    """Stands in for logits [B, T, C] not computed yet: notes which rows a seed reads (each read gives zeros)."""

    def __init__(self, shape: torch.Size):
        super().__init__(torch.zeros(0, dtype=torch.long), torch.zeros((0, shape[-1])), shape)
        self.read: list[torch.Tensor] = []

    def at(self, index: torch.Tensor) -> torch.Tensor:
        self.read.append(index.cpu())
        return self.values.new_zeros((len(index), self.shape[-1]))

    def with_values(self, values: torch.Tensor) -> RowSparse:
        return self


def seed_rows(target: Any, shape: torch.Size, positions: torch.Tensor | None, style: str) -> torch.Tensor | None:
    """The rows of [B, T, C] logits (of their [B·T, C] view; sorted, on the CPU) that `seeds` reads for `target`,
    found by seeding a stand-in that records them. None for other outputs, for targets that need the whole
    output (a seed tensor, a function of it) and for targets `seeds` refuses (it says why when called)."""
    if len(shape) != 3 or _needs_whole(target, shape):
        return None
    probe = _RowProbe(shape)
    try:
        seeds(target, probe, positions, style)
    except TargetError:
        return None
    return torch.unique(torch.cat(probe.read)) if probe.read else None


def _needs_whole(target: Any, shape: torch.Size) -> bool:
    """A target whose seed is made from the whole output: a function of it, or a seed tensor shaped like it."""
    if isinstance(target, Targets):
        return any(_needs_whole(t, shape) for t in target)
    if isinstance(target, torch.Tensor):
        return tuple(target.shape) == tuple(shape)
    return callable(target)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-zero entry (the last real token, for left or right padding)."""
    flipped = (mask != 0).flip(-1).to(torch.int8)
    return mask.shape[-1] - 1 - flipped.argmax(-1)


def last_real_positions(kwargs: dict, shape: torch.Size) -> torch.Tensor | None:
    """Each sample's last real position, for a [B, T, C] output of a call with an attention mask [B, T]; else None
    (a mask of other rows than the output's, as a decoder that takes each sample's codebooks as rows has, says
    nothing about the output's rows)."""
    mask = kwargs.get("attention_mask")
    if len(shape) == 3 and isinstance(mask, torch.Tensor) and mask.dim() == 2 and tuple(mask.shape) == shape[:2]:
        return last_positions(mask)
    return None
