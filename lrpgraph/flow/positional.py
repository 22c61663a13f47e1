"""Find where positional encodings enter the relevance flow (PA-LRP), without knowing the model.

- Rotary: a product of a relevant tensor with a factor that comes from `cos` or `sin` (through
  re-indexing, casts and scalings): q·cos + rotate_half(q)·sin, partial rotary dims and interleaved
  halves included, whether one rotary module serves all layers or each has its own.
- Additive: a sum of a relevant tensor that no attention or normalisation has touched yet (the input
  embeddings) with a constant table that has a position axis: a learnable table looked up by
  position ids (GPT-2 `wpe`, BERT/RoBERTa), a parameter added directly (ViT, CLS row included), or a
  fixed sinusoidal table. Biases (no position axis) do not count; a lookup whose ids are all the same
  (token-type embeddings) is rejected later, when its ids are known.

Each such operand is given its own `expand_as` node, broadcast to the op's output (the shape of its
relevant operand), so that the relevance it receives is per sample and per use (per layer for
rotary). Those nodes are the positional sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from ..capture.graph import INPUT, Graph, float_node
from ..capture.node_args import normalised_args
from ..capture.rewrite import insert_call
from ..capture.shapes import above_one, same_shape
from ..ops.reindex import EXPAND_AS
from ..ops.table import facts
from .relevance import moves_values, scales, value_inputs


@dataclass(frozen=True)
class PositionalSource:
    """An expand node carrying one positional operand into the relevance flow."""

    node: fx.Node
    kind: str  # "rotary" or "additive"
    axis: int  # the position axis of the node's (full) shape
    ids: fx.Node | None = None  # for table lookups: the ids, checked for being positions
    group: tuple = ()  # rotary: (the consuming attention module, cos or sin): q's and k's relevance add up there


def expose_positional_operands(graph: Graph, relevant: set[fx.Node], mixing: set[fx.Node]) -> list[PositionalSource]:
    """Insert the expand nodes (once per graph) and return the sources; `mixing` = nodes downstream of attention
    or normalisation."""
    fx_graph = graph.module.graph
    found = []
    for node in list(fx_graph.nodes):
        if node.op != "call_function" or node not in relevant:
            continue
        f = facts(node.target)
        if f.arithmetic == "product" and len(f.operands) == 2:
            kind = "rotary"
        elif f.arithmetic == "sum" and len(f.operands) == 2 and node not in mixing:
            kind = "additive"
        else:
            continue
        args = normalised_args(node)
        operands = [(name, args.get(name)) for name in f.operands]
        if not all(isinstance(v, fx.Node) for _, v in operands):
            continue
        relevant_ops = [v for _, v in operands if v in relevant]
        if len(relevant_ops) != 1:
            continue
        value = next(v for _, v in operands if v not in relevant)
        if not float_node(value):
            continue
        origin = (_rotary_origin if kind == "rotary" else _table_origin)(graph, value)
        group = (graph.module_path(node), _factor(value)) if kind == "rotary" else ()
        axis = _position_axis(value, node)
        (signal,) = relevant_ops
        if origin is None or axis is None or not same_shape(signal.meta["val"].shape, node.meta["val"].shape):
            continue
        with fx_graph.inserting_before(node):
            full = insert_call(fx_graph, EXPAND_AS, (value, signal), node)
        node.replace_input_with(value, full)
        found.append(PositionalSource(full, kind, axis, origin if isinstance(origin, fx.Node) else None, group))
    if found:
        graph.module.recompile()
    return found


def mixing_nodes(graph: Graph, relevant: set[fx.Node]) -> set[fx.Node]:
    """Relevant nodes downstream of attention, softmax, bilinear products or normalisation."""
    mixed: set[fx.Node] = set()
    for node in graph.module.graph.nodes:
        if node not in relevant:
            continue
        if facts(node.target).mixes_positions or any(i in mixed for i in node.all_input_nodes):
            mixed.add(node)
        elif scales(node) and sum(i in relevant for i in node.all_input_nodes) > 1:
            mixed.add(node)  # a product of two relevant tensors (written-out norms, gates)
    return mixed


def _through(node: fx.Node):
    """Follow re-indexing, casts and scalings by constants back towards where a value came from."""
    for _ in range(32):
        yield node
        if node.op != "call_function":
            return
        inputs = [i for i in node.all_input_nodes if float_node(i)]
        if (moves_values(node) or scales(node)) and len(inputs) == 1:
            node = inputs[0]
        else:
            return


def _rotary_origin(graph: Graph, node: fx.Node):
    """A rotary factor: computed by cos/sin in the graph (returns True), or rows of a precomputed sin/cos
    table looked up by ids (returns the ids, checked for being positions later); None otherwise."""
    ids = None
    for n in _through(node):
        if n.op == "call_function" and facts(n.target).trig:
            return True
        if n.op == "call_function" and facts(n.target).gather:
            found = normalised_args(n).get(facts(n.target).gather)
            found = found[0] if isinstance(found, (list, tuple)) and found else found
            ids = found if isinstance(found, fx.Node) else ids
            table = normalised_args(n).get("self", normalised_args(n).get("weight"))
            for t in _through(table) if isinstance(table, fx.Node) else ():
                if t.op == "placeholder" and graph.kinds.get(t) != INPUT and ids is not None:
                    return ids
            return None
    return None


def _factor(node: fx.Node) -> str:
    """Which rotary factor a value is: "cos" or "sin" (computed in the graph), else the table it was read from."""
    for n in _through(node):
        if n.op == "call_function" and facts(n.target).trig:
            return facts(n.target).trig
        if n.op == "placeholder":
            return n.name
    return node.name


def _table_origin(graph: Graph, node: fx.Node):
    """Where an additive constant comes from: a table lookup (returns the ids), a parameter, buffer or
    constant, or a table computed in the graph from positions (returns True); None otherwise."""
    for n in _through(node):
        if n.op == "placeholder":
            return True if graph.kinds.get(n) != INPUT else None
        if n.op != "call_function":
            return None
        if facts(n.target).lookup:
            ids = normalised_args(n).get(facts(n.target).lookup)
            ids = ids[0] if isinstance(ids, (list, tuple)) else ids
            return ids if isinstance(ids, fx.Node) else None
        if facts(n.target).trig:  # a sinusoidal table built in the graph
            return True
    last = n
    return True if last.op == "call_function" and _input_independent(graph, last) else None


def _input_independent(graph: Graph, node: fx.Node) -> bool:
    """No user input among the node's ancestors: a table built from parameters, buffers and positions."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder" and graph.kinds.get(n) == INPUT:
            return False
        stack.extend(value_inputs(n))
    return True


def _position_axis(value: fx.Node, consumer: fx.Node) -> int | None:
    """The axis (of the consumer's shape) along which the constant varies, other than the last (features)."""
    shape, full = list(value.meta["val"].shape), list(consumer.meta["val"].shape)
    shape = [1] * (len(full) - len(shape)) + shape
    axes = [i for i in range(1, len(full) - 1) if above_one(shape[i])]
    return axes[-1] if axes else None
