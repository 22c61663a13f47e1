"""Memory schedule: which activations the forward keeps, and how the others are recomputed (promises).

Every activation a rule reads is a promise. The schedule decides, per activation, whether the
forward keeps it or the walk recomputes it — from the nearest kept values (checkpoints), once,
sharing the result with every rule that reads it. The walker and the rules never see which.

- Default (no budget): keep what rules read, except values that are cheap to recompute
  (elementwise and re-indexing chains, constants) from values that are kept anyway.
- With a budget: the forward keeps only checkpoints at the points where a single value carries
  everything forward (a transformer's residual stream between blocks), spaced so that the
  checkpoints plus one segment's activations fit the budget (√N-style); a segment is recomputed
  when the walk first enters it.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..capture.graph import Graph
from ..capture.shapes import Shapes, expression
from ..ops.table import facts
from .recompute import Recipes

_MAX_CHEAP_RECIPE = 64  # nodes a cheap recomputation may run (rotary tables and masks included)


@dataclass
class Schedule:
    """keep: activations the forward stores. recipes: for every other activation a rule reads, the nodes
    to run (in order) to recompute it. released: after each walk step, the values whose last reader it is."""

    keep: frozenset[fx.Node]
    recipes: dict[fx.Node, list[fx.Node]]
    released: dict[fx.Node, tuple[fx.Node, ...]]
    checkpoints: list[fx.Node] = field(default_factory=list)
    predicted_peak: int = 0
    shared: frozenset[fx.Node] = frozenset()  # computed inside several recipes: held from the first until the last
    programs: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # walks as code (`program.py`)

    @functools.cached_property
    def recomputation(self) -> Recipes:
        """The recipes as generated code, made on first use and kept with the schedule."""
        return Recipes(self.recipes, self.shared)


Size = Callable[[fx.Node], int]


def byte_sizes(shapes: Shapes) -> Size:
    """Bytes of each node's value for one call's concrete shapes."""

    def size(node: fx.Node) -> int:
        return _bytes(node.meta.get("val"), shapes.of(node) if node in shapes.index else None)

    return size


def _bytes(val: Any, shape: Any) -> int:
    if shape is None:
        return 0
    if isinstance(val, torch.Tensor):
        return math.prod(shape) * val.element_size()
    if isinstance(val, (tuple, list)):
        return sum(_bytes(v, s) for v, s in zip(val, shape, strict=True) if s is not None)
    return 0


def is_cheap(node: fx.Node) -> bool:
    """Elementwise, re-indexing and small reductions: cheaper to recompute than to hold (random draws are not: a
    second draw differs)."""
    if node.op != "call_function":
        return False
    found = facts(node.target)
    return not found.expensive and not found.random


def make_schedule(
    graph: Graph, order: list[fx.Node], reads: dict[fx.Node, list[fx.Node]], budget: int | None, nbytes: Size
) -> Schedule:
    """order: the walk order; reads: activations each step reads; nbytes: each value's size in this call."""
    position = {n: i for i, n in enumerate(graph.module.graph.nodes)}
    walk_index = {n: i for i, n in enumerate(order)}
    first_read: dict[fx.Node, int] = {}
    for node in order:
        for r in reads.get(node, ()):
            first_read.setdefault(r, walk_index[node])
    needed = sorted((n for n in first_read if n.op != "placeholder"), key=position.__getitem__)
    outputs = {n for n in graph.outputs if isinstance(n, fx.Node)}
    keep, recipes = _cheap_schedule(needed, outputs, position)
    checkpoints: list[fx.Node] = []
    if budget is not None and sum(nbytes(n) for n in keep) > budget:
        keep, recipes, checkpoints = _segment_schedule(graph, needed, outputs, keep, recipes, budget, position, nbytes)
    shared = _shared(recipes) if not checkpoints else frozenset()  # a segment's recipes hold what they share
    released: dict[fx.Node, list[fx.Node]] = {}
    for value, step in _last_readers(order, reads, recipes, first_read, keep, shared).items():
        released.setdefault(step, []).append(value)
    peak = sum(nbytes(n) for n in keep) + _largest_segment(needed, keep, checkpoints, position, nbytes)
    return Schedule(frozenset(keep), recipes, {k: tuple(v) for k, v in released.items()}, checkpoints, peak, shared)


def _shared(recipes: dict[fx.Node, list[fx.Node]]) -> frozenset[fx.Node]:
    """Values that several recipes compute on the way to their targets and that are small beside each of those
    targets (a rotary table, a position mask): computed once and held while a recipe still needs them, instead of
    once per recipe. A value as large as a target (an embedding, a normalised input) is recomputed instead: held, it
    would add to the walk's peak memory."""
    targets: dict[fx.Node, list[fx.Node]] = {}
    for target, recipe in recipes.items():
        for n in recipe:
            if n is not target and n not in recipes:
                targets.setdefault(n, []).append(target)
    elements: dict[fx.Node, tuple[int, ...] | None] = {}

    def count(node: fx.Node) -> tuple[int, ...] | None:
        if node not in elements:
            elements[node] = _elements(node.meta.get("val"))
        return elements[node]

    def small_beside(value: fx.Node, target: fx.Node) -> bool:
        a, b = count(value), count(target)
        return a is None or (b is not None and all(x * 4 <= y for x, y in zip(a, b, strict=True)))

    return frozenset(n for n, of in targets.items() if len(of) > 1 and all(small_beside(n, t) for t in of))


def _elements(val: Any) -> tuple[int, ...] | None:
    """A tensor's element count with every dynamic size at 64 and at 4096 (None for a non-tensor): at most a quarter
    of a target's at both, a value is small beside it (a rotary table [T, d] beside the rows it multiplies,
    [heads, T, d], or beside a mask [T, T])."""
    if not isinstance(val, torch.Tensor):
        return None
    dims = [expression(d) for d in val.shape]
    return tuple(
        math.prod(int(d) if isinstance(d, int) else int(d.xreplace(dict.fromkeys(d.free_symbols, size))) for d in dims)
        for size in (64, 4096)
    )


def _cheap_schedule(needed: list[fx.Node], outputs: set[fx.Node], position: dict) -> tuple[set[fx.Node], dict]:
    """Keep every needed value except cheap ones recomputable from kept values and placeholders."""
    keep: set[fx.Node] = set()
    recipes: dict[fx.Node, list[fx.Node]] = {}
    for node in needed:
        recipe = None if node in outputs or not is_cheap(node) else recipe_for(node, keep, _MAX_CHEAP_RECIPE, position)
        if recipe is None or not _small_work(recipe, node):
            keep.add(node)
        else:
            recipes[node] = recipe
    return keep, recipes


def _small_work(recipe: list[fx.Node], target: fx.Node) -> bool:
    """No member of the recipe computes much more than its target: one step of an unrolled scan read from the
    discretisation of every step ([batch, d, T, n]), recomputed at each of T steps, would cost O(T²); held, it costs
    its own size. Views (the op's schema says its output aliases its input) and a tuple's getitem compute nothing;
    any other member (cat, pad, where copy their whole output too) counts at most 4× the target's elements at both
    probe sizes."""
    wanted = _elements(target.meta.get("val"))
    if wanted is None:
        return True
    for member in recipe:
        if member.target is operator.getitem or getattr(member.target, "is_view", False):
            continue
        work = _elements(member.meta.get("val"))
        if work is not None and any(w > 4 * t for w, t in zip(work, wanted, strict=True)):
            return False
    return True


def recipe_for(
    node: fx.Node,
    available: set[fx.Node],
    limit: int | None,
    position: dict[fx.Node, int] | None = None,
    cheap_only: bool = True,
) -> list[fx.Node] | None:
    """The nodes to run, in graph order, to compute `node` from `available` values and placeholders.

    `position`: each node's index in the graph (computed here when not given)."""
    found: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in found or n in available or n.op in ("placeholder", "get_attr"):
            continue
        if n.op != "call_function" or facts(n.target).random or (cheap_only and not is_cheap(n)):
            return None  # a random draw is held, never drawn again
        found.add(n)
        if limit is not None and len(found) > limit:
            return None
        stack.extend(n.all_input_nodes)
    if len(found) < 2:
        return list(found)
    position = position or {n: i for i, n in enumerate(node.graph.nodes)}
    return sorted(found, key=position.__getitem__)


def _segment_schedule(graph, needed, outputs, keep, recipes, budget, position, nbytes):
    """Keep checkpoints at cuts of the forward; recompute each segment from the checkpoint before it."""
    live = _live_sets(graph, position)
    expensive = [n for n in needed if n in keep and n not in outputs]
    best = None
    segment = max(1, budget)
    for _ in range(60):
        checkpoints = _place_checkpoints(expensive, live, segment, position, nbytes)
        kept = set(checkpoints) | {n for n in keep if n in outputs}
        largest = _largest_segment(needed, kept, checkpoints, position, nbytes)
        peak = sum(nbytes(n) for n in kept) + largest
        if best is None or peak < best[0]:
            best = (peak, checkpoints, kept)
        if peak <= budget or segment <= 1:
            break
        segment = int(segment * 0.8)
    _, checkpoints, kept = best
    kept |= {n for n in graph.module.graph.nodes if n.op == "call_function" and facts(n.target).random}
    recipes = {}
    for node in needed:
        if node in kept:
            continue
        recipe = recipe_for(node, kept, None, position, cheap_only=False)
        if recipe is None:  # cannot be recomputed (should not happen for graph nodes): keep it
            kept.add(node)
        else:
            recipes[node] = recipe
    return kept, recipes, checkpoints


def _live_sets(graph: Graph, position: dict) -> list[frozenset[fx.Node]]:
    """After each node (in forward order), the values live across that point that cannot be cheaply
    recomputed from the inputs alone: storing them is enough to restart the forward there.

    Masks, positions and rotary tables are cheap functions of the inputs and do not count; in a
    transformer the smallest sets are the residual stream between blocks.
    """
    nodes = list(graph.module.graph.nodes)
    last_use = {}
    for n in nodes:
        for i in n.all_input_nodes:
            last_use[i] = position[n]
    derivable: set[fx.Node] = set()
    for n in nodes:
        if n.op in ("placeholder", "get_attr") or (is_cheap(n) and all(i in derivable for i in n.all_input_nodes)):
            derivable.add(n)
    live: set[fx.Node] = set()
    sets = []
    for n in nodes:
        if n.op == "call_function" and n not in derivable and last_use.get(n, -1) > position[n]:
            live.add(n)
        live = {v for v in live if last_use.get(v, -1) > position[n]}
        sets.append(frozenset(live))
    return sets


def _place_checkpoints(
    expensive: list[fx.Node], live: list[frozenset], segment: int, position: dict, nbytes: Size
) -> list[fx.Node]:
    """Walk forward; once a segment's activations would exceed `segment` bytes, close it at the point
    since the last cut where the fewest bytes are live, and keep those values."""
    checkpoints: set[fx.Node] = set()
    last_cut, total = -1, 0
    for node in expensive:
        size, here = nbytes(node), position[node]
        if total + size > segment and here - last_cut > 1:
            cut = min(range(last_cut + 1, here), key=lambda i: (sum(nbytes(v) for v in live[i]), -i))
            checkpoints |= live[cut]
            last_cut = cut
            total = sum(nbytes(n) for n in expensive if cut < position[n] < here)
        total += size
    return sorted(checkpoints, key=position.__getitem__)


def _largest_segment(needed, kept, checkpoints, position, nbytes: Size) -> int:
    """Bytes of recomputed activations between consecutive checkpoints, at most (all held at once)."""
    if not checkpoints:
        return 0
    bounds = sorted(position[c] for c in checkpoints)
    sizes = [0] * (len(bounds) + 1)
    for node in needed:
        if node in kept:
            continue
        segment = sum(1 for b in bounds if b < position[node])
        sizes[segment] += nbytes(node)
    return max(sizes)


def _last_readers(order, reads, recipes, first_read, keep, shared) -> dict[fx.Node, fx.Node]:
    """The walk step after which each held value can go: its own last reader, and recipes' uses of it."""
    last: dict[fx.Node, fx.Node] = {}
    for node in order:
        for r in reads.get(node, ()):
            last[r] = node
    walk_index = {n: i for i, n in enumerate(order)}

    def extend(node: fx.Node, reader: fx.Node) -> None:
        current = last.get(node)
        if current is None or walk_index[current] < walk_index[reader]:
            last[node] = reader

    for target, recipe in recipes.items():
        reader = order[first_read[target]]
        for n in recipe:
            if n in recipes or n in shared:  # computed once, held for this recipe as well
                extend(n, reader)
            for source in n.all_input_nodes:
                if source in keep or source in recipes:
                    extend(source, reader)
    return last
