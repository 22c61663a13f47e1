"""Small tensor helpers every rule kernel uses: the stabiliser and un-broadcasting."""

from __future__ import annotations

import torch


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps·sign(z) with sign(0) = +1, as Zennit's stabilizer: safe to divide by."""
    return z + torch.where(z >= 0, eps, -eps).to(z.dtype)


def divide(r: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """r / stab(z), computed in the wider of the two dtypes."""
    return r / stabilize(z, eps)


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
