"""K relevance maps walked back over one forward: in one walk, or under a memory budget in walks of as many maps as
fit beside the activations, joined along the maps (each walk keeps the stored activations for the next)."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ..ops.sparse import RowSparse
from ..propagate.plan import Plan
from ..propagate.schedule import byte_sizes
from ..propagate.walker import BatchedWalker, Walker, WalkResult
from .output import ForwardPass


class Walks:
    """The walks of one explain over its forward; `stats` says how the K maps were split."""

    def __init__(self, plan: Plan, forward: ForwardPass, record: frozenset[fx.Node]):
        self.plan, self.forward, self.record = plan, forward, record
        self.stats: dict[str, int] = {}

    def run(self, seed: Any, k: int | None, budget: int | None, retain: bool = False) -> WalkResult:
        """One walk of one map (k None), or of K maps (the seed's leading dim) split to fit `budget` bytes.

        retain: keep what the forward stored for walks after these (conditional relevance)."""
        schedule, store = self.forward.schedule, self.forward.store
        if k is None:
            return Walker(self.plan, schedule, store, self.record).run(seed, retain=retain)
        per_walk = self.maps_per_walk(k, budget, seed.dtype)
        self.stats = {"maps": k, "maps_per_walk": min(per_walk, k), "walks": -(-k // per_walk)}
        if per_walk >= k:
            return BatchedWalker(self.plan, schedule, store, self.record).run(seed, retain=retain)
        parts, sizes = [], []
        for first in range(0, k, per_walk):
            walker = BatchedWalker(self.plan, schedule, store, self.record)
            parts.append(walker.run(_maps(seed, first, first + per_walk), retain=retain or first + per_walk < k))
            sizes.append(min(per_walk, k - first))
        return WalkResult(
            inputs=_joined([p.inputs for p in parts], sizes),
            latent=_joined([p.latent for p in parts], sizes),
            absorbed=_summed([p.absorbed for p in parts]),
            by_rule=_summed([p.by_rule for p in parts]),
            by_node=_summed([p.by_node for p in parts]),
        )

    def maps_per_walk(self, k: int, budget: int | None, dtype: torch.dtype) -> int:
        """How many of K maps one walk carries: all of them, or under a memory budget as many as fit beside the
        activations the schedule holds at about two dense maps of the plan's largest value each."""
        if budget is None:
            return k
        size = byte_sizes(self.forward.store.shapes)
        tensors = (n for n in self.plan.steps if isinstance(n.meta.get("val"), torch.Tensor))
        largest = max((size(n) // n.meta["val"].element_size() for n in tensors), default=1)
        per_map = 2 * largest * torch.empty((), dtype=dtype).element_size()
        return max(1, min(k, (budget - self.forward.schedule.predicted_peak) // max(per_map, 1)))


def _summed(books: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: sum(book.get(key, 0.0) for book in books) for key in {k for book in books for k in book}}


def _maps(seed: Any, start: int, stop: int) -> Any:
    """Maps start..stop of a seed with K leading maps."""
    return seed.select_maps(start, stop) if isinstance(seed, RowSparse) else seed[start:stop]


def _joined(walks: list[dict[fx.Node, Any]], sizes: list[int]) -> dict[fx.Node, torch.Tensor]:
    """Each node's relevance from every walk, joined along the maps (zeros for a walk that sent none there)."""
    joined = {}
    for node in {n: None for w in walks for n in w}:
        dense = [p.dense() if isinstance(p, RowSparse) else p for p in (w.get(node) for w in walks)]
        like = next(p for p in dense if p is not None)
        joined[node] = torch.cat(
            [p if p is not None else like.new_zeros((n, *like.shape[1:])) for p, n in zip(dense, sizes, strict=True)]
        )
    return joined
