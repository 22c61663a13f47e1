"""Rewrite every-index selects of one tensor as one unbind: an unrolled loop's steps read x[:, t] for t = 0 … T−1.

Each `select`'s relevance is a tensor of x's full size holding one slice (its adjoint scatters into zeros), and the
T of them are summed: O(T²) work and memory traffic for a loop of T steps. As `unbind` the pieces are stacked
once. The forward is the same (both make views), and so is every value.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from ..capture.node_args import normalised_args, without_cached_args
from ..capture.shapes import known_int
from ..ops.reindex import UNBIND
from ..ops.table import facts


def selects_as_unbind(gm: fx.GraphModule) -> int:
    """Replace the selects of each tensor that take every index along one dim by an unbind; returns how many
    tensors were rewritten."""
    rewritten = 0
    for node in list(gm.graph.nodes):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            continue
        for dim, selects in _selects_by_dim(node, value).items():
            size = known_int(value.shape[dim])
            if size is not None and size >= 2 and sorted(selects) == list(range(size)):
                _unbind(gm.graph, node, dim, selects)
                rewritten += 1
    if rewritten:
        gm.recompile()
    return rewritten


def _selects_by_dim(node: fx.Node, value: torch.Tensor) -> dict[int, dict[int, list[fx.Node]]]:
    """{dim: {index: the select nodes of node at that index}} for selects with concrete dims and indices."""
    found: dict[int, dict[int, list[fx.Node]]] = {}
    for user in node.users:
        picks = facts(user.target).picks
        if picks is None:
            continue
        args = normalised_args(user)
        dim, index = args.get("dim"), args.get(picks)
        if args.get("self") is not node or not isinstance(dim, int) or not -value.dim() <= dim < value.dim():
            continue
        size = known_int(value.shape[dim])
        if not isinstance(index, int) or size is None or not -size <= index < size:
            continue
        found.setdefault(dim % value.dim(), {}).setdefault(index % size, []).append(user)
    return found


def _unbind(graph: fx.Graph, node: fx.Node, dim: int, selects: dict[int, list[fx.Node]]) -> None:
    with graph.inserting_after(node):
        pieces = graph.call_function(UNBIND, (node, dim))
    pieces.meta["val"] = tuple(selects[index][0].meta["val"] for index in sorted(selects))  # the same views
    first = selects[0][0]
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in first.meta:
            pieces.meta[key] = first.meta[key]
    after = pieces
    for index in sorted(selects):
        with graph.inserting_after(after):
            piece = graph.call_function(operator.getitem, (pieces, index))
        piece.meta = {**without_cached_args(selects[index][0].meta), "val": pieces.meta["val"][index]}
        for select in selects[index]:
            select.replace_all_uses_with(piece)
            graph.erase_node(select)
        after = piece
