"""Roles of products, found on the graph without knowing the model: gates and attention-weighted values.

A *gate* is an elementwise product of two relevant tensors where one factor comes from an activation or
a softmax (act(gate)·up in gated MLPs, routing weights in mixtures of experts). *Attention values* is
a matrix product of two relevant tensors where one operand comes from a softmax (attention
probabilities, written out). "Comes from" looks through re-indexing, casts and normalisations by a
constant or by the tensor's own sum (top-k routing weights renormalised). Which ops are products and
which arguments are their operands is the op table's to say.
"""

from __future__ import annotations

from torch import fx

from ..capture.node_args import normalised_args
from ..ops.adapter import Role, RoleKind
from ..ops.table import facts
from .relevance import moves_values, scales


def product_roles(graph: fx.Graph, relevant: set[fx.Node], regions: dict[fx.Node, fx.Node]) -> dict[fx.Node, Role]:
    """{node: its Role}, naming the gate or probabilities operand of each product that has one."""
    roles: dict[fx.Node, Role] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node in regions:
            continue
        f = facts(node.target)
        product = f.arithmetic == "product"
        if not (product or f.matmul):
            continue
        operands = relevant_operands(node, relevant)
        if operands is None:
            continue
        sources = [(role, _source(value, relevant, regions)) for role, value in operands]
        if product:
            gates = [role for role, kind in sources if kind is not None]
            softmaxes = [role for role, kind in sources if kind == "softmax"]
            if len(gates) == 1:
                roles[node] = Role(RoleKind.GATE, *gates[0])
            elif len(gates) == 2 and len(softmaxes) == 1:
                roles[node] = Role(RoleKind.GATE, *softmaxes[0])
        else:
            probs = [role for role, kind in sources if kind == "softmax"]
            if len(probs) == 1:
                roles[node] = Role(RoleKind.ATTENTION, *probs[0])
    return roles


def named_operands(node: fx.Node) -> list[tuple[tuple[str, int | None], object]]:
    """((argument, index in a list argument), value) of a product's operands as the op table names them: two
    arguments, or the items of one list argument (einsum's tensors)."""
    names = facts(node.target).operands
    args = normalised_args(node)
    if len(names) == 2:
        return [((n, None), args.get(n)) for n in names]
    listed = args.get(names[0]) if names else None
    return [((names[0], i), v) for i, v in enumerate(listed)] if isinstance(listed, (list, tuple)) else []


def relevant_operands(node: fx.Node, relevant: set[fx.Node]) -> list[tuple[tuple[str, int | None], fx.Node]] | None:
    """The node's two operands (`named_operands`) when there are two, distinct and both relevant; else None."""
    operands = named_operands(node)
    values = [v for _, v in operands]
    if (
        len(values) == 2
        and all(isinstance(v, fx.Node) and v in relevant for v in values)
        and values[0] is not values[1]
    ):
        return operands
    return None


def _source(node: fx.Node, relevant: set[fx.Node], regions: dict[fx.Node, fx.Node]) -> str | None:
    """ "softmax" or "activation" if the tensor is one, seen through re-indexing and normalisation; else None."""
    for _ in range(64):
        if node.op != "call_function":
            return None
        if node in regions:
            return "activation"
        source = facts(node.target).gate_source
        if source is not None:
            return source
        inputs = [n for n in node.all_input_nodes if n in relevant]
        if moves_values(node) and len(inputs) == 1:
            node = inputs[0]
        elif scales(node) and inputs:
            node = _numerator(node, inputs)
            if node is None:
                return None
        else:
            return None
    return None


def _numerator(node: fx.Node, inputs: list[fx.Node]) -> fx.Node | None:
    """Scaling by a constant, or a division by the tensor's own sum: follow the scaled tensor."""
    if len(inputs) == 1:
        return inputs[0]
    numerator, denominator = node.args[0], node.args[1]
    quotient = facts(node.target).arithmetic == "quotient"
    if quotient and isinstance(denominator, fx.Node) and denominator.args[:1] == (numerator,):
        return numerator
    return None
