"""Which nodes carry relevance, and along which edges it flows back.

Relevance starts at user inputs and flows only through floating-point values: an integer or bool
tensor (ids, masks, positions) carries relevance only while it is re-indexed or turned into other ids
(offsets, hashes), until an embedding lookup turns it into floats. A float computed from integers (a
cast of the attention mask, a position table) is a constant. Graph passes can cut nodes (normalisation
scales, treated as constants) and redirect nodes (a pointwise region such as x·sigmoid(x) hands its
relevance straight to x).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import fx

from ..capture.graph import INPUT, Graph, is_float
from ..capture.node_args import normalised_args
from ..ops.table import facts, spec


@dataclass
class Flow:
    """`edges[n]` are the nodes n hands relevance to; `live` the nodes relevance can reach from the output."""

    edges: dict[fx.Node, list[fx.Node]]
    live: list[fx.Node]
    relevant: set[fx.Node] = field(default_factory=set)


def is_index(value) -> bool:
    """An integer tensor (ids, positions), or a tuple of them."""
    if isinstance(value, (tuple, list)):
        return bool(value) and all(is_index(v) for v in value)
    return isinstance(value, torch.Tensor) and not is_float(value) and value.dtype != torch.bool


def _any_float(value) -> bool:
    """Some output of the node is floating point."""
    if isinstance(value, (tuple, list)):
        return any(_any_float(v) for v in value)
    return is_float(value)


def moves_values(node: fx.Node) -> bool:
    """A node that only moves, copies or selects values (views, casts, getitem)."""
    return facts(node.target).moves_values


def scales(node: fx.Node) -> bool:
    """A product or quotient: scales a tensor (by a constant, or by another tensor)."""
    return facts(node.target).arithmetic in ("product", "quotient")


def relevance_flow(
    graph: Graph,
    output: fx.Node,
    cuts: Iterable[fx.Node] = (),
    redirects: dict[fx.Node, fx.Node] | None = None,
    sources: Iterable[fx.Node] = (),
) -> Flow:
    """Edges of relevance and the live nodes, from the user inputs (and extra `sources`) to `output`."""
    cuts, redirects, sources = set(cuts), redirects or {}, set(sources)
    edges: dict[fx.Node, list[fx.Node]] = {}
    relevant: set[fx.Node] = set()
    from_inputs: set[fx.Node] = set()  # values computed from user inputs (relevant or not)
    for node in graph.module.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder":
            if graph.kinds.get(node) == INPUT:
                from_inputs.add(node)
                if is_float(val) or is_index(val):
                    relevant.add(node)
            continue
        if node.op != "call_function":
            continue
        if not isinstance(val, (int, torch.SymInt)) and any(n in from_inputs for n in value_inputs(node)):
            from_inputs.add(node)  # (a size, such as a sequence length, is a shape: not data from the inputs)
        if node in sources:
            relevant.add(node)
            edges[node] = []
            continue
        if node in cuts:
            continue
        if node in redirects:
            root = redirects[node]
            if root in relevant:
                edges[node] = [root]
                relevant.add(node)
            continue
        inputs = [n for n in value_inputs(node) if n in relevant]
        if not inputs:
            continue
        if _any_float(val):
            into = [n for n in inputs if _any_float(n.meta.get("val"))]
            ids_arg = facts(node.target).lookup
            if ids_arg is not None:
                ids = _arg(node, ids_arg)
                into += [n for n in inputs if n in ids and is_index(n.meta.get("val"))]
        elif moves_values(node) or (traces_ids(node) and _with_constants(node, inputs, from_inputs)):
            into = [n for n in inputs if is_index(n.meta.get("val"))]
        else:
            into = []
        if into:
            edges[node] = into
            relevant.add(node)
    live = _reachable(output, edges) if output in relevant else []
    return Flow(edges={n: edges.get(n, []) for n in live}, live=live, relevant=relevant)


def traces_ids(node: fx.Node) -> bool:
    """Integer arithmetic on ids (offsets, hashing) whose result is looked up later: relevance follows it."""
    entry = spec(node.target)
    return is_index(node.meta.get("val")) and entry is not None and entry.integer is not None


def _with_constants(node: fx.Node, relevant: list[fx.Node], from_inputs: set[fx.Node]) -> bool:
    """Ids combined only with constants (offsets, hash factors) or selected by masks — not with other inputs, such
    as positions counted from an attention mask, which stay constants."""
    return all(n in relevant or n not in from_inputs or _is_mask(n) for n in node.all_input_nodes)


def _is_mask(node: fx.Node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and value.dtype == torch.bool


def value_inputs(node: fx.Node) -> list[fx.Node]:
    """The node's inputs whose values (not only shapes) its output depends on."""
    shape_only = facts(node.target).shape_only
    if not shape_only:
        return node.all_input_nodes
    excluded = {n for name in shape_only for n in _arg(node, name)}
    return [n for n in node.all_input_nodes if n not in excluded]


def _arg(node: fx.Node, name: str) -> list[fx.Node]:
    value = normalised_args(node).get(name)
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, fx.Node)]


def _reachable(output: fx.Node, edges: dict[fx.Node, list[fx.Node]]) -> list[fx.Node]:
    """Nodes relevance reaches from `output`, in reverse topological (walk) order."""
    seen = {output}
    stack = [output]
    while stack:
        node = stack.pop()
        for n in edges.get(node, ()):
            if n not in seen:
                seen.add(n)
                stack.append(n)
    order = {n: i for i, n in enumerate(output.graph.nodes)}
    return sorted(seen, key=order.__getitem__, reverse=True)
