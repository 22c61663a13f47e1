"""Relevance that is nonzero in a few rows only — the seed of a token target on [batch, positions, vocab] logits.

Held as row indices plus their values; layers that act on the last dim alone (the vocabulary head)
consume it directly, everything else gets the dense tensor. K seeds (K targets) keep each its own rows,
so K generated tokens cost K rows, not K × the rows of all of them. The same form holds a deferred
vocabulary head's logits at the rows a seed reads (the others are never computed, see `propagate/head.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowSparse:
    """values [n, C] at rows `index` [n] of the tensor viewed as [rows, C] (dense shape `shape`); with `maps`
    [n], the tensor has a leading dim of K maps and entry i lies in map `maps[i]`."""

    index: torch.Tensor
    values: torch.Tensor
    shape: torch.Size
    maps: torch.Tensor | None = None

    @property
    def lead(self) -> int:
        """Leading dims of maps: 1 for K seeds, 0 for one."""
        return 0 if self.maps is None else 1

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def rows(self) -> int:
        """Rows of one map (all dims but the maps' and the last, flattened)."""
        count = 1
        for n in self.shape[self.lead : -1]:
            count *= n
        return count

    def flat_index(self) -> torch.Tensor:
        """Each entry's row in the [maps × rows, C] view."""
        return self.index if self.maps is None else self.maps * self.rows + self.index

    def dense(self) -> torch.Tensor:
        maps = self.shape[0] if self.lead else 1
        out = self.values.new_zeros((maps * self.rows, self.shape[-1]))
        return out.index_copy_(0, self.flat_index(), self.values).reshape(self.shape)

    def at(self, index: torch.Tensor) -> torch.Tensor:
        """The values [n, C] at rows `index` [n], each one of this tensor's rows (`self.index` sorted, no maps)."""
        index = index.to(self.index.device)
        if index.numel() == 0:
            return self.values[:0]
        where = torch.searchsorted(self.index, index).clamp_(max=max(len(self.index) - 1, 0))
        if len(self.index) == 0 or not bool((self.index[where] == index).all()):
            raise IndexError(f"rows {sorted(set(index.tolist()) - set(self.index.tolist()))} are not held")
        return self.values[where]

    def to(self, dtype: torch.dtype) -> RowSparse:
        return RowSparse(self.index, self.values.to(dtype), self.shape, self.maps)

    def with_values(self, values: torch.Tensor) -> RowSparse:
        return RowSparse(self.index, values, self.shape, self.maps)

    def sum_per(self, batch: int) -> torch.Tensor:
        """Sums per sample ([batch], or [K, batch] with maps), as float64."""
        per_row = self.values.sum(-1).double()
        sample = torch.div(self.index, self.rows // batch, rounding_mode="floor")
        if self.maps is None:
            return per_row.new_zeros(batch).index_add_(0, sample, per_row)
        out = per_row.new_zeros((self.shape[0] * batch,))
        return out.index_add_(0, self.maps * batch + sample, per_row).reshape(self.shape[0], batch)

    def sample(self, row: int, length: int) -> RowSparse:
        """Sample `row` of a [B, T, C] seed (no leading maps), cut to its first `length` positions: [1, length, C]."""
        positions = self.shape[1]
        keep = (torch.div(self.index, positions, rounding_mode="floor") == row) & (self.index % positions < length)
        return RowSparse(
            self.index[keep] % positions, self.values[keep].clone(), torch.Size((1, length, self.shape[-1]))
        )

    def select_maps(self, start: int, stop: int) -> RowSparse:
        """Maps start..stop of K seeds."""
        keep = (self.maps >= start) & (self.maps < stop)
        shape = torch.Size((min(stop, self.shape[0]) - start, *self.shape[1:]))
        return RowSparse(self.index[keep], self.values[keep], shape, self.maps[keep] - start)

    @staticmethod
    def stack(seeds: list[RowSparse]) -> RowSparse:
        """K seeds over the same dense shape → one with a leading dim K, each keeping its own rows."""
        maps = torch.cat([torch.full_like(s.index, k) for k, s in enumerate(seeds)])
        index = torch.cat([s.index for s in seeds])
        values = torch.cat([s.values for s in seeds])
        return RowSparse(index, values, torch.Size((len(seeds), *seeds[0].shape)), maps)
