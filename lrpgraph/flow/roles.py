"""Roles of products, found on the graph without knowing the model: gates and attention-weighted values.

A *gate* is a product of two relevant tensors where one factor comes from an activation or a
softmax (act(gate)·up in gated MLPs, routing weights in mixtures of experts). *Attention values*
is a matrix product of two relevant tensors where one operand comes from a softmax (attention
probabilities, written out). "Comes from" looks through re-indexing, casts and normalisations by
a constant or by the tensor's own sum (top-k routing weights renormalised).
"""

from __future__ import annotations

import torch
from torch import fx

from ..capture.node_args import normalized_args
from ..ops.registry import lookup
from .relevance import SCALINGS, moves_values

aten = torch.ops.aten
_PRODUCTS = {aten.mul.Tensor}
_MATMULS = {aten.mm.default, aten.bmm.default, aten.matmul.default, aten.linear.default}


def product_roles(graph: fx.Graph, relevant: set[fx.Node], regions: dict[fx.Node, fx.Node]) -> dict[fx.Node, str]:
    """{node: "gate:<argument>" or "attention:<argument>"} naming the gate or probabilities operand."""
    roles: dict[fx.Node, str] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node in regions:
            continue
        if node.target in _PRODUCTS:
            operands = _relevant_operands(node, relevant, ("self", "other"))
            if operands is None:
                continue
            kinds = {name: _source(value, relevant, regions) for name, value in operands}
            gates = [name for name, kind in kinds.items() if kind is not None]
            if len(gates) == 1:
                roles[node] = f"gate:{gates[0]}"
            elif len(gates) == 2 and list(kinds.values()).count("softmax") == 1:
                roles[node] = f"gate:{next(n for n, k in kinds.items() if k == 'softmax')}"
        elif node.target in _MATMULS:
            names = ("input", "weight") if node.target is aten.linear.default else _matmul_names(node)
            operands = _relevant_operands(node, relevant, names)
            if operands is None:
                continue
            probs = [name for name, value in operands if _source(value, relevant, regions) == "softmax"]
            if len(probs) == 1:
                roles[node] = f"attention:{probs[0]}"
    return roles


def _matmul_names(node: fx.Node) -> tuple[str, str]:
    return ("self", "other") if node.target is aten.matmul.default else ("self", "mat2")


def _relevant_operands(node, relevant, names):
    args = normalized_args(node)
    operands = [(n, args.get(n)) for n in names]
    if all(isinstance(v, fx.Node) and v in relevant for _, v in operands) and operands[0][1] is not operands[1][1]:
        return operands
    return None


def _source(node: fx.Node, relevant: set[fx.Node], regions: dict[fx.Node, fx.Node]) -> str | None:
    """ "softmax" or "activation" if the tensor is one, seen through re-indexing and normalisation; else None."""
    for _ in range(64):
        if node.op != "call_function":
            return None
        if node in regions:
            return "activation"
        source = getattr(lookup(node.target), "gate_source", None)
        if source is not None:
            return source
        inputs = [n for n in node.all_input_nodes if n in relevant]
        if moves_values(node) and len(inputs) == 1:
            node = inputs[0]
        elif node.target in SCALINGS and inputs:
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
    if node.target is aten.div.Tensor and isinstance(denominator, fx.Node) and denominator.args[:1] == (numerator,):
        return numerator
    return None
