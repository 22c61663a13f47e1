"""The ledger: what each rule did not pass on, booked where `plan._absorbs` says.

Each step that may keep relevance books the sums of what it received and what it passed on, in the
relevance's own precision (float32 for half types), as 0-d tensors; the subtraction and the totals are
made in float64 once, when the walk ends — one transfer of every sum instead of a dozen small ops per step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import fx

from ..ops.sparse import RowSparse


class Ledger:
    """Per step: (node, where it books, the rule's name), its received sums and its passed-on sums."""

    def __init__(self) -> None:
        self._sums: list[torch.Tensor] = []
        self._entries: list[tuple[fx.Node, str, str, int, int, int]] = []

    def book(self, node: fx.Node, absorbs: str, rule: str, received: Any, passed: list[Any]) -> None:
        """A step received `received` and passed on `passed` (one value per receiver that got any)."""
        start = len(self._sums)
        self._sums += _parts(received)
        middle = len(self._sums)
        for r in passed:
            self._sums += _parts(r)
        self._entries.append((node, absorbs, rule, start, middle, len(self._sums)))

    def close(self) -> tuple[dict[str, float], dict[str, float], dict[fx.Node, float]]:
        """(kept by where it is booked, by "where at op class:rule", by node), each kept = received − passed in
        float64, summed in walk order."""
        values = _as_floats(self._sums)
        absorbed: dict[str, float] = defaultdict(float)
        by_rule: dict[str, float] = defaultdict(float)
        by_node: dict[fx.Node, float] = {}
        for node, absorbs, rule, start, middle, end in self._entries:
            kept = _added(values[start:middle]) - _added(values[middle:end])
            absorbed[absorbs] += kept
            by_rule[f"{absorbs} at {rule}"] += kept
            by_node[node] = kept
        return dict(absorbed), dict(by_rule), by_node


def _parts(R: Any) -> list[torch.Tensor]:
    """0-d sums of a relevance value (a tensor, a RowSparse, or a list of them for tuple outputs)."""
    if isinstance(R, RowSparse):
        return [_sum(R.values)]
    if isinstance(R, list):
        return [s for r in R if r is not None for s in _parts(r)]
    return [_sum(R)]


def _sum(t: torch.Tensor) -> torch.Tensor:
    """Sum in the tensor's own precision (float32 for half types): a float64 sum of float32 is 20× slower."""
    if t.is_complex():  # relevance of real and imaginary components
        t = torch.view_as_real(t)
    return t.sum(dtype=torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t.sum()


def _as_floats(sums: list[torch.Tensor]) -> list[float]:
    """Every sum as a Python float (float64), one stack and transfer per device."""
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for i, s in enumerate(sums):
        by_device[s.device].append(i)
    values = [0.0] * len(sums)
    for indices in by_device.values():
        stacked = torch.stack([sums[i] for i in indices]).to(torch.float64)  # stack promotes mixed dtypes exactly
        for i, v in zip(indices, stacked.tolist(), strict=True):
            values[i] = v
    return values


def _added(values: list[float]) -> float:
    """Left to right from 0.0, as the per-step float64 additions it replaces (not `sum`, which compensates)."""
    total = 0.0
    for v in values:
        total += v
    return total
