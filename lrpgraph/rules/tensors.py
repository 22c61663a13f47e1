"""Small tensor helpers every rule kernel uses: the stabiliser and un-broadcasting."""

from __future__ import annotations

import torch


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps·sign(z) with sign(0) = +1, as Zennit's stabilizer: safe to divide by."""
    return (z >= 0).to(z.dtype).mul_(2 * eps).sub_(eps).add_(z)


def divide(r: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """r / stab(z), computed in the wider of the two dtypes."""
    return r / stabilize(z, eps)


def nonzero_rows(R: torch.Tensor) -> torch.Tensor | None:
    """Indices of the rows (all dims but the last, flattened) where R is not zero — None if that is most rows.

    A seed at one position of a [B, T, vocab] output leaves all other rows zero; layers acting on the
    last dim alone can then skip them, exactly, since every rule is linear in R.
    """
    if R.dim() < 2 or R.numel() < 1 << 20:
        return None
    rows = R.reshape(-1, R.shape[-1])
    live = rows.ne(0).any(-1)
    count = int(live.sum())
    if count * 2 > rows.shape[0]:
        return None
    return live.nonzero().squeeze(1)


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` of t viewed as [rows, last dim] (meta stand-ins keep only the shape)."""
    if t.device.type == "meta":
        return torch.empty((index.numel(), t.shape[-1]), dtype=t.dtype, device="meta")
    return t.reshape(-1, t.shape[-1]).index_select(0, index.to(t.device))


def put_rows(values: torch.Tensor, index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zeros of `shape` with rows `index` (of the [rows, last dim] view) set to `values`."""
    out = torch.zeros((int(torch.tensor(shape[:-1]).prod()), shape[-1]), dtype=values.dtype, device=values.device)
    return out.index_copy_(0, index, values).reshape(shape)


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
