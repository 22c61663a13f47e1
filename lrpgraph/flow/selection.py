"""Find the selection of state-space scans, so that MambaLRP can hold it constant (Rezaei Jafari et al., 2024).

A selective scan computes y = C·h + D·u from its input u, with h_t = Ā_t·h_{t−1} + B̄_t·u_t, where the selection
Δ, Ā = exp(ΔA), B̄ = ΔB and C are themselves computed from u through projections (layers with weights). Held
constant, the selection makes y linear in u and all relevance flows through u. On the graph a scan is found by its
skip term: a sum `y + u·D` with D a constant, whose other term y is computed from u. The *data* of the scan are
the values computed from u (or from a copy of it) by ops without weights — products, sums, re-indexing, the
chunked form's einsums and its recurrence; a product on the way from u to y with one data operand and one
relevant operand that is not data multiplies by the selection, and that operand is returned (Ā·h, B̄·u, h·C in
the recurrent form, Ā of a recurrence traced as one op; Δ·x, the decay masks, C and B in Mamba-2's chunked form).
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ..capture.node_args import normalised_args
from ..ops.table import facts
from .relevance import value_inputs
from .roles import named_operands, relevant_operands


def selection_operands(graph: fx.Graph, relevant: set[fx.Node]) -> set[fx.Node]:
    """The selection operands of every scan with a skip term; empty for a graph without scans."""
    found: set[fx.Node] = set()
    for node in graph.nodes:
        skip = _skip(node, relevant)
        if skip is None:
            continue
        output, data_input = skip
        data = _data(_copies_of(data_input, relevant), relevant)
        if output not in data:
            continue
        on_path = _ancestors(output, data)
        for product in on_path:
            f = facts(product.target)
            multiplies = f.arithmetic == "product" or f.matmul or f.recurrence
            named = relevant_operands(product, relevant) if multiplies else None
            if named is None:
                continue
            operands = [v for _, v in named]
            inside = [v for v in operands if v in data]
            if len(inside) == 1:
                found.update(v for v in operands if v not in data)
    return found


def _skip(node: fx.Node, relevant: set[fx.Node]) -> tuple[fx.Node, fx.Node] | None:
    """(y, u) of a sum `y + u·D` of two relevant terms, D a constant; None for any other node."""
    f = facts(node.target)
    if node.op != "call_function" or f.arithmetic != "sum" or len(f.operands) != 2:
        return None
    args = normalised_args(node)
    terms = [args.get(name) for name in f.operands]
    if not all(isinstance(t, fx.Node) and t in relevant for t in terms) or terms[0] is terms[1]:
        return None
    for y, scaled in (terms, terms[::-1]):
        if facts(scaled.target).arithmetic != "product":
            continue
        factors = [v for _, v in named_operands(scaled) if isinstance(v, fx.Node)]
        inputs = [v for v in factors if v in relevant]
        if len(inputs) == 1 and len(factors) == 2:
            return y, inputs[0]
    return None


def _copies_of(node: fx.Node, relevant: set[fx.Node]) -> list[fx.Node]:
    """The node and the values it copies: up through re-indexing that keeps every value (views, casts, padding)."""
    chain = [node]
    while facts(node.target).moves_values and node.op == "call_function":
        inputs = [n for n in value_inputs(node) if n in relevant]
        if len(inputs) != 1 or not _keeps_all(node, inputs[0]):
            break
        node = inputs[0]
        chain.append(node)
    return chain


def _data(roots: list[fx.Node], relevant: set[fx.Node]) -> set[fx.Node]:
    """Relevant values computed from the roots by ops without weights."""
    data = set(roots)
    stack = list(roots)
    while stack:
        node = stack.pop()
        for user in node.users:
            if user in data or user not in relevant or _has_weights(user, relevant):
                continue
            data.add(user)
            stack.append(user)
    return data


def _has_weights(node: fx.Node, relevant: set[fx.Node]) -> bool:
    """A matrix product or convolution with a constant operand: a layer (a projection computing the selection)."""
    return facts(node.target).expensive and any(n not in relevant for n in value_inputs(node))


def _ancestors(output: fx.Node, within: set[fx.Node]) -> set[fx.Node]:
    """Nodes of `within` from which `output` is computed, `output` included."""
    seen = {output}
    stack = [output]
    while stack:
        for n in stack.pop().all_input_nodes:
            if n in within and n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def _keeps_all(node: fx.Node, source: fx.Node) -> bool:
    """The node has at least as many values as its source (a view, cast or padding; not a piece of a split)."""
    out, given = node.meta.get("val"), source.meta.get("val")
    if not (isinstance(out, torch.Tensor) and isinstance(given, torch.Tensor)):
        return False
    return statically_known_true(out.numel() >= given.numel())
