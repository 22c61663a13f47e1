"""Checks of `explain`'s arguments: every bad one a clear error naming it, raised before the model runs."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from ..caller import warn
from ..capture.call import leaf_names
from ..capture.graph import Graph
from ..errors import InputError
from ..ops.fallback import MODES
from ..ops.sparse import RowSparse


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


def record_nodes(graph: Graph, paths: Iterable[str]) -> dict[str, fx.Node]:
    """{module path: the node holding that module's output} for `record=`."""
    if isinstance(paths, str):
        paths = [paths]
    found = {}
    for path in paths:
        node = graph.module_output(path)
        if node is None:
            raise InputError(f"'{path}' is not a module that computes a tensor in the traced model")
        found[path] = node
    return found


def check_seed(seed: Any, name: str, strict: bool) -> None:
    """The explained part of the output has no NaN or infinity (an error, or with strict=False a warning).

    The seed holds the output's values where relevance starts (a NaN in the model's hidden states
    reaches them); checking it rather than all of a language model's logits costs nothing.
    """
    values = seed.values if isinstance(seed, RowSparse) else seed
    if not bool(torch.isfinite(values).all()):
        _non_finite(f"the model's output '{name}'", strict)


def check_relevance(reached: dict[Any, Any], strict: bool) -> None:
    """The relevance that reached the inputs is finite (an error, or with strict=False a warning): a model can compute
    NaN inside where relevance flows while its output stays finite (an attention row whose keys are all masked, in a
    position the output does not read), and that must not come back as a silent NaN."""
    for node, r in reached.items():
        values = r.values if isinstance(r, RowSparse) else r
        if isinstance(values, torch.Tensor) and not bool(torch.isfinite(values).all()):
            why = (
                ": the model computes NaN or infinity inside, where relevance flows, although the explained output "
                "is finite (for example an attention row whose keys are all masked)"
            )
            _non_finite(f"the relevance reaching input '{node.name}'", strict, why)
            return


def _non_finite(what: str, strict: bool, why: str = ", so relevance would be NaN") -> None:
    message = f"{what} contains NaN or infinite values{why}"
    if strict:
        raise InputError(message + "; pass strict=False to explain anyway")
    warn(message)
