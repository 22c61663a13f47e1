"""Small tensor helpers every rule kernel uses: the stabilizer, un-broadcasting, rows, memory layout."""

from __future__ import annotations

from typing import Any

import torch

from .sparse import RowSparse


def stabilize(z: torch.Tensor, eps: float, sign_aware: bool = True) -> torch.Tensor:
    """z + eps·sign(z) with sign(0) = +1 (Zennit's stabilizer: safe to divide by); or z + eps (additive)."""
    if not sign_aware:
        return z + eps
    # copysign reads the sign bit: z + 0.0 turns −0.0 into +0.0 (so it counts as positive, as sign(0) = +1), and
    # stays float all the way — comparisons and boolean casts cost several times a float op on CPU
    s = z + 0.0  # one buffer for the three passes where it can (fresh memory costs page faults beside such a pass)
    return torch.copysign(s.new_full((), eps), s, out=s if writable(s) else None).add_(z)


def divide(r: torch.Tensor, z: torch.Tensor, eps: float, sign_aware: bool = True) -> torch.Tensor:
    """r / stab(z), in the relevance's precision (a bfloat16 z is widened first)."""
    s = stabilize(z.to(torch.promote_types(z.dtype, r.dtype)), eps, sign_aware)
    return torch.div(r, s, out=s if writable(s, r) else None)


def writable(t: torch.Tensor, *operands: torch.Tensor) -> bool:
    """Whether a kernel may write an elementwise result of `t` (a tensor it made) and `operands` into t: it holds
    that result's shape and dtype, and no vmap is active (its in-place ops need self batched like every operand)."""
    if torch._C._are_functorch_transforms_active():
        return False
    for o in operands:
        if o.dtype != t.dtype and torch.promote_types(t.dtype, o.dtype) != t.dtype:
            return False
        if o.shape != t.shape and torch.broadcast_shapes(t.shape, o.shape) != t.shape:
            return False
    return True


def nonzero_rows(R: torch.Tensor, lead: int = 0) -> torch.Tensor | None:
    """Indices of the rows (all dims but the last, flattened) where R is not zero — None if that is most rows.

    A seed at one position of a [B, T, vocab] output leaves all other rows zero; layers acting on the
    last dim alone can then skip them, exactly, since every rule is linear in R. `lead` leading dims
    (several relevance maps) share one set of rows: a row counts if any map has it.
    """
    if R.dim() < 2 + lead or R.numel() < 1 << 20:
        return None
    rows = R.reshape(*R.shape[:lead], -1, R.shape[-1])
    live = (rows.amax(-1) != 0) | (rows.amin(-1) != 0)  # float reductions: a comparison over all of R costs 7×
    for _ in range(lead):
        live = live.any(0)
    count = int(live.sum())
    if count * 2 > live.shape[0]:
        return None
    return live.nonzero().squeeze(1)


def take_rows(t: torch.Tensor | RowSparse, index: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """Rows `index` of t viewed as [*lead dims, rows, last dim] (meta stand-ins keep only the shape; a value held
    at some rows only, a RowSparse, gives those rows)."""
    if isinstance(t, RowSparse):
        return t.at(index)
    if t.device.type == "meta":
        return torch.empty((*t.shape[:lead], index.numel(), t.shape[-1]), dtype=t.dtype, device="meta")
    return t.reshape(*t.shape[:lead], -1, t.shape[-1]).index_select(lead, index.to(t.device))


def put_rows(values: torch.Tensor, index: torch.Tensor, shape: torch.Size, lead: int = 0) -> torch.Tensor:
    """Zeros of `shape` with rows `index` (of the [*lead dims, rows, last dim] view) set to `values`."""
    rows = 1
    for n in shape[lead:-1]:
        rows *= n
    out = values.new_zeros((*shape[:lead], rows, shape[-1]))
    return out.index_copy_(lead, index, values).reshape(shape)


def unbroadcast(t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Sum `t` down to `shape`, undoing broadcasting (the adjoint of expand)."""
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    extra = t.dim() - len(shape)
    if extra > 0:
        t = t.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape, strict=True)) if b == 1 and a != 1)
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t.reshape(shape)


def ones_like_shape(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A tensor of ones with x's shape on `like`'s device and dtype, without materialising copies."""
    return torch.ones((), dtype=like.dtype, device=like.device).expand(x.shape)


def positive(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def negative(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


def laid_out_as(result: Any, plain: Any) -> Any:
    """An op replayed under autograd (a gradient form, a branch's Jacobian) in the memory layout of the op's own
    output `plain`: later views in the graph depend on it."""
    if not (isinstance(result, torch.Tensor) and isinstance(plain, torch.Tensor)) or result.stride() == plain.stride():
        return result
    if result.shape != plain.shape or not dense(plain):
        return result
    return torch.empty_strided(plain.shape, plain.stride(), dtype=result.dtype, device=result.device).copy_(result)


def dense(t: torch.Tensor) -> bool:
    """Every element in its own place of one block of memory: a permutation of a contiguous layout."""
    expected = 1
    dims = sorted(((st, n) for n, st in zip(t.shape, t.stride(), strict=True) if n > 1))
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True
