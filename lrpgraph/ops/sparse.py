"""Relevance that is nonzero in a few rows only — the seed of a token target on [batch, positions, vocab] logits.

Held as row indices plus their values; layers that act on the last dim alone (the vocabulary head)
consume it directly, everything else gets the dense tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowSparse:
    """values [*lead, n, C] at rows `index` [n] of the tensor viewed as [*lead, rows, C]; dense shape `shape`."""

    index: torch.Tensor
    values: torch.Tensor
    shape: torch.Size
    lead: int = 0

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    def dense(self) -> torch.Tensor:
        lead = tuple(self.shape[: self.lead])
        rows = 1
        for n in self.shape[self.lead : -1]:
            rows *= n
        out = self.values.new_zeros((*lead, rows, self.shape[-1]))
        return out.index_copy_(self.lead, self.index, self.values).reshape(self.shape)

    def to(self, dtype: torch.dtype) -> RowSparse:
        return RowSparse(self.index, self.values.to(dtype), self.shape, self.lead)

    def sum_per(self, batch_dim_rows: int) -> torch.Tensor:
        """Sums over each of the first `batch_dim_rows` groups of rows (per sample), as float64."""
        per_row = self.values.sum(-1).double()
        lead = tuple(self.shape[: self.lead])
        rows_per_sample = 1
        for n in self.shape[self.lead + 1 : -1]:
            rows_per_sample *= n
        out = per_row.new_zeros((*lead, batch_dim_rows))
        return out.index_add_(self.lead, torch.div(self.index, rows_per_sample, rounding_mode="floor"), per_row)

    def sample(self, row: int, length: int) -> RowSparse:
        """Sample `row` of a [B, T, C] seed (no leading maps), cut to its first `length` positions: [1, length, C]."""
        positions = self.shape[1]
        keep = (torch.div(self.index, positions, rounding_mode="floor") == row) & (self.index % positions < length)
        return RowSparse(
            self.index[keep] % positions, self.values[keep].clone(), torch.Size((1, length, self.shape[-1]))
        )

    @staticmethod
    def stack(seeds: list[RowSparse]) -> RowSparse:
        """K seeds over the same dense shape → one with a leading dim K over the union of their rows."""
        index = torch.unique(torch.cat([s.index for s in seeds]))
        position = {int(i): j for j, i in enumerate(index.tolist())}
        values = seeds[0].values.new_zeros((len(seeds), len(index), seeds[0].shape[-1]))
        for k, s in enumerate(seeds):
            rows = torch.tensor([position[int(i)] for i in s.index.tolist()], device=values.device)
            values[k].index_copy_(0, rows, s.values)
        return RowSparse(index, values, torch.Size((len(seeds), *seeds[0].shape)), 1)
