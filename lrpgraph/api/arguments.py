"""Checks of `explain`'s arguments: every bad one a clear error naming it, raised before the model runs."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from ..caller import warn
from ..capture.call import leaf_names
from ..capture.graph import Graph
from ..engine.conditions import masks
from ..errors import InputError
from ..ops.fallback import MODES
from ..ops.sparse import RowSparse
from .targets import Targets


def check_options(
    memory_budget: Any, offload: Any, dtype: Any, fallback: Any, contrastive: Any, strict: Any, record: Any
) -> None:
    """The keyword options, by type and range."""
    if memory_budget is not None and (
        not isinstance(memory_budget, numbers.Integral) or isinstance(memory_budget, bool) or memory_budget < 0
    ):
        raise InputError(f"memory_budget must be a number of bytes ≥ 0 (or None), not {memory_budget!r}")
    for name, flag in (("offload", offload), ("contrastive", contrastive), ("strict", strict)):
        if not isinstance(flag, bool):
            raise InputError(f"{name} must be True or False, not {flag!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch.dtype such as torch.float32 (or None), not {dtype!r}")
    if fallback is not None and fallback not in MODES:
        raise InputError(f"fallback must be one of {', '.join(MODES)} or None, not {fallback!r}")
    if not isinstance(record, str) and not (
        isinstance(record, Iterable) and all(isinstance(path, str) for path in record)
    ):
        raise InputError(f"record must be a module path or a list of them, not {record!r}")


def check_inputs(model: torch.nn.Module, args: tuple, kwargs: dict, strict: bool) -> None:
    """No empty tensors; no NaN or infinity in float inputs (an error, or with strict=False a warning)."""
    leaves = pytree.tree_leaves((args, kwargs))
    for name, leaf in zip(leaf_names(model, args, kwargs), leaves, strict=True):
        if not isinstance(leaf, torch.Tensor):
            continue
        if leaf.numel() == 0:
            raise InputError(f"input '{name}' is empty (shape {tuple(leaf.shape)}): there is nothing to explain")
        if (leaf.is_floating_point() or leaf.is_complex()) and not bool(torch.isfinite(leaf).all()):
            _non_finite(f"input '{name}'", strict)


def record_nodes(graph: Graph, points: Iterable[str]) -> dict[str, fx.Node]:
    """{point: the node it names} for `record=`: a module path (its output), a module path with ":input" (the
    value it is called on: a layer's residual stream, the heads before an output projection, an MLP's hidden
    neurons before its down projection), or the name of a node of the traced graph."""
    if isinstance(points, str):
        points = [points]
    nodes = {n.name: n for n in graph.module.graph.nodes if n.op != "output"}
    found = {}
    for point in points:
        path, _, side = point.rpartition(":") if point.endswith(":input") else (point, "", "")
        node = graph.module_input(path) if side else graph.module_output(path)
        if node is None and not side:
            node = nodes.get(point)
        if node is None or not isinstance(node.meta.get("val"), torch.Tensor):
            raise InputError(f"'{point}' is not a point of the traced model{_nearest(point, graph, nodes)}")
        found[point] = node
    return found


def _nearest(point: str, graph: Graph, nodes: dict[str, fx.Node]) -> str:
    """ "; did you mean …" with the closest module paths and node names, or a hint of the forms a point takes."""
    paths = {p for n in graph.module.graph.nodes for p, _ in graph.module_stack(n) if p}
    close = difflib.get_close_matches(point.removesuffix(":input"), [*sorted(paths), *nodes], n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return ": name a module path (its output), a module path with ':input' (the value it is called on) or a node"


def check_seed(seed: Any, name: str, strict: bool) -> None:
    """The explained part of the output has no NaN or infinity (an error, or with strict=False a warning).

    The seed holds the output's values where relevance starts (a NaN in the model's hidden states
    reaches them); checking it rather than all of a language model's logits costs nothing.
    """
    values = seed.values if isinstance(seed, RowSparse) else seed
    if not bool(torch.isfinite(values).all()):
        _non_finite(f"the model's output '{name}'", strict)


def check_relevance(reached: dict[Any, Any], strict: bool, where: Callable[[], str]) -> None:
    """The relevance that reached the inputs is finite (an error, or with strict=False a warning): a model can compute
    NaN inside where relevance flows while its output stays finite (an attention row whose keys are all masked, in a
    position the output does not read), or a rule can divide by zero, and that must not come back as a silent NaN.
    `where` names the node where it first stops being finite (`engine/non_finite.py`), asked only then."""
    for node, r in reached.items():
        values = r.values if isinstance(r, RowSparse) else r
        if isinstance(values, torch.Tensor) and not bool(torch.isfinite(values).all()):
            found = where() or (
                "the model computes NaN or infinity inside, where relevance flows, although the explained output is "
                "finite (for example an attention row whose keys are all masked)"
            )
            _non_finite(f"the relevance reaching input '{node.name}'", strict, f": {found}")
            return


def _non_finite(what: str, strict: bool, why: str = ", so relevance would be NaN") -> None:
    message = f"{what} contains NaN or infinite values{why}"
    if strict:
        raise InputError(message + "; pass strict=False to explain anyway")
    warn(message)


def check_conditions(conditions: Any, target: Any, contrastive: bool) -> dict[str, Any]:
    """`conditions=` as {point: [condition, …]}: a mapping, one target, every point with the same number K."""
    if conditions is None:
        return {}
    if not isinstance(conditions, Mapping) or not conditions:
        raise InputError(f"conditions must be a dict {{point: [condition, …]}}, not {conditions!r}")
    if isinstance(target, Targets) or contrastive:
        raise InputError("conditions explain one target at a time (not Targets, not contrastive=True)")
    counts = {
        point: len(c) if isinstance(c, Sequence) and not isinstance(c, str) else 0 for point, c in conditions.items()
    }
    if len(set(counts.values())) != 1:
        raise InputError(f"every point needs the same number of conditions (the K maps), got {counts}")
    return dict(conditions)


def condition_masks(
    conditions: dict[str, Any], recorded: dict[str, fx.Node], plan: Any, call: Any, dtype: torch.dtype
) -> dict[fx.Node, torch.Tensor]:
    """Each conditioned point's node and masks [K, *its shape per sample], checked before any walk."""
    found = {}
    for point, given in conditions.items():
        node = recorded[point]
        if node not in plan.steps:
            raise InputError(f"no relevance reaches {point!r} from the explained output: there is nothing to condition")
        found[node] = masks(point, given, tuple(call.shape(node))[1:], dtype)
    return found
