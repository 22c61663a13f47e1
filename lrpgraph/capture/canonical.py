"""Bring an export's training IR to the op set a decomposed program has, without re-tracing it.

`torch.export` returns a graph of ATen ops that may still mutate tensors in place; `run_decompositions`
makes it functional by tracing it again, which costs more than the export itself with symbolic shapes
(8-layer Llama: 1.4 s export, 2.6 s decomposition). A graph that mutates nothing differs from its
decomposition only in a few value-preserving spellings, rewritten here: `.to(...)` becomes `_to_copy` and
eval-mode `batch_norm` becomes `_native_batch_norm_legit_no_training`. (Eval-mode dropout stays: an
identity, but some methods treat the authors' dropout modules specially.) A softmax written out as
`exp(x - logsumexp(x))` (Reformer) becomes `softmax(x)`, the same values, so the softmax rule applies; an einsum
of three or more operands becomes two-operand einsums contracted left to right, each of which has a rule.
Graphs with in-place ops or higher-order ops are decomposed by torch as before.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from .graph import leading
from .node_args import normalised_args, without_cached_args
from .rewrite import insert_call

aten = torch.ops.aten
_TO = {aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.to.other}
# call targets that are not ATen overloads but need no functionalisation
_PLAIN_CALLS = {
    operator.getitem,
    operator.add,
    operator.sub,
    operator.mul,
    operator.floordiv,
    operator.mod,
    torch.sym_min,  # sizes: min(a, b) of symbolic sizes
    torch.sym_max,
}


# fused ops decomposed into their cell ops before rules see them (their gates then get the gate rule)
DECOMPOSED = (aten.lstm.input, aten.gru.input, aten.rnn_tanh.input, aten.rnn_relu.input)


def fused_ops(graph: fx.Graph) -> dict:
    """The decompositions of the fused ops (DECOMPOSED) the graph holds."""
    from torch._decomp import decomposition_table

    present = {node.target for node in graph.nodes if node.op == "call_function"}
    return {op: decomposition_table[op] for op in DECOMPOSED if op in present}


@functools.cache
def _export_decompositions() -> dict:
    """torch.export's default table: core ATen decompositions and those of composite ops (bilinear, cdist, diff)."""
    return dict(torch.export.default_decompositions().items())


def decomposition(target: Any) -> Callable | None:
    """torch's own decomposition of an op (`torch._decomp.decomposition_table`, then torch.export's default table,
    which holds the composite ops'), or None."""
    from torch._decomp import decomposition_table

    if not isinstance(target, torch._ops.OpOverload):
        return None
    return decomposition_table.get(target) or _export_decompositions().get(target)


def picked(graph: fx.Graph, wanted: Callable[[fx.Node], bool], sources: list[fx.Node]) -> list[fx.Node]:
    """The nodes `wanted` picks among those computed from the call's inputs (`sources`) through tensors: constants
    (rotary tables, ALiBi slopes) are left out."""
    data, found = set(sources), []
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(leading(node.meta.get("val")), torch.Tensor):
            continue
        if any(n in data for n in node.all_input_nodes):
            data.add(node)
            if wanted(node):
                found.append(node)
    return found


def fresh_in_place_as_functional(graph: fx.Graph) -> None:
    """x = f(...); x.sub_(y) → x = f(...); sub(x, y), where x is a fresh tensor (no view, no input) read by nothing
    else: the in-place op then mutates nothing anyone sees (optimum-quanto's int4 dequantization writes so)."""
    for node in list(graph.nodes):
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or not target._schema.is_mutable:
            continue
        name = target._schema.name.split("::")[-1]
        functional = getattr(getattr(aten, name[:-1], None), target._overloadname, None) if name.endswith("_") else None
        self = node.args[0] if node.args else None
        if functional is None or not isinstance(self, fx.Node) or len(self.users) != 1 or not _fresh(self):
            continue
        node.target = functional


def _fresh(node: fx.Node) -> bool:
    """A new tensor: computed by an op that neither mutates nor returns a view of its inputs."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable:
        return False
    return all(r.alias_info is None for r in target._schema.returns)


def is_functional(graph: fx.Graph) -> bool:
    """No in-place or mutating op, and no higher-order op (subgraphs): safe to use without decomposing."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            if target._schema.is_mutable:
                return False
        elif target not in _PLAIN_CALLS and not getattr(target, "__module__", "").startswith("torch.fx.experimental"):
            return False
    return True


def canonicalise(gm: fx.GraphModule) -> None:
    """Rewrite the training-IR spellings of a functional graph into the decomposed ones (in place; the caller
    recompiles)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _TO:
            _as_copy(graph, node)
        elif node.target is aten.batch_norm.default:
            _as_inference_batch_norm(graph, node)
        elif node.target is aten.exp.default:
            _as_softmax(graph, node)
        elif node.target is aten.einsum.default:
            _as_pairwise_einsums(graph, node)


def _as_copy(graph: fx.Graph, node: fx.Node) -> bool:
    """x.to(dtype / device) → _to_copy(x, dtype=…, device=…) with the same value."""
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return False
    with graph.inserting_before(node):
        copy = graph.call_function(aten._to_copy.default, (node.args[0],), {"dtype": val.dtype, "device": val.device})
    copy.meta = without_cached_args(node.meta)
    node.replace_all_uses_with(copy)
    graph.erase_node(node)
    return True


def _as_inference_batch_norm(graph: fx.Graph, node: fx.Node) -> bool:
    """batch_norm(training=False, running stats) → _native_batch_norm_legit_no_training(...)[0]."""
    args = normalised_args(node)
    if args.get("training") or args.get("running_mean") is None or args.get("running_var") is None:
        return False
    operands = (args["input"], args["weight"], args["bias"], args["running_mean"], args["running_var"])
    with graph.inserting_before(node):
        norm = graph.call_function(
            aten._native_batch_norm_legit_no_training.default, (*operands, args["momentum"], args["eps"])
        )
        first = graph.call_function(operator.getitem, (norm, 0))
    val = node.meta["val"]
    with val.fake_mode:
        statistic = torch.empty((0,), dtype=val.dtype, device=val.device)
    norm.meta = {**without_cached_args(node.meta), "val": (val, statistic, statistic)}
    first.meta = without_cached_args(node.meta)
    node.replace_all_uses_with(first)
    graph.erase_node(node)
    return True


def _as_softmax(graph: fx.Graph, node: fx.Node) -> bool:
    """exp(x − logsumexp(x, [d], keepdim=True)) → softmax(x, d)."""
    difference = node.args[0]
    if not (isinstance(difference, fx.Node) and difference.target is aten.sub.Tensor and len(difference.args) == 2):
        return False
    x, normaliser = difference.args
    if not (isinstance(normaliser, fx.Node) and normaliser.target is aten.logsumexp.default):
        return False
    args = normalised_args(normaliser)
    dims = list(args.get("dim") or [])
    if normaliser.args[0] is not x or len(dims) != 1 or not args.get("keepdim"):
        return False
    with graph.inserting_before(node):
        softmax = graph.call_function(aten._softmax.default, (x, dims[0], False))
    softmax.meta = without_cached_args(node.meta)
    node.replace_all_uses_with(softmax)
    graph.erase_node(node)
    return True


def _as_pairwise_einsums(graph: fx.Graph, node: fx.Node) -> bool:
    """einsum("ab,bc,cd->ad", x, y, z) → einsum("ac,cd->ad", einsum("ab,bc->ac", x, y), z): each intermediate keeps
    the indices a later operand or the output still names. Equations with '...' are left as they are."""
    equation, operands = node.args[0], list(node.args[1])
    if len(operands) < 3 or "..." in equation or not all(isinstance(o, fx.Node) for o in operands):
        return False
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if not arrow:  # implicit output: the indices named once, sorted
        output = "".join(sorted(c for c in set(inputs) - {","} if inputs.count(c) == 1))
    current, value = terms[0], operands[0]
    with graph.inserting_before(node):
        for i in range(1, len(terms)):
            later = set("".join(terms[i + 1 :])) | set(output)
            seen = dict.fromkeys(current + terms[i])
            result = output if i == len(terms) - 1 else "".join(c for c in seen if c in later)
            value = insert_call(
                graph, aten.einsum.default, (f"{current},{terms[i]}->{result}", [value, operands[i]]), node
            )
            current = result
    node.replace_all_uses_with(value)
    graph.erase_node(node)
    return True
