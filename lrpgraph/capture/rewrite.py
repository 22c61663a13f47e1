"""Helpers for passes that insert nodes: compute each new node's fake value and module stack."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx
from torch.fx.node import map_arg

_MADE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph → {(op, operands): fake value}


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(map(str, value.shape)), tuple(map(str, value.stride())), value.dtype, value.device)
    return (type(value).__name__, str(value))


def insert_call(graph: fx.Graph, target: Any, args: tuple, like: fx.Node) -> fx.Node:
    """Add `target(*args)` to the graph (at the current insertion point) with meta copied from `like`.

    Its fake value is computed once per operation on operands alike in shape, strides, dtype and device, and
    shared (a pass inserting the same op in every layer pays for one fake dispatch, not one per layer)."""
    node = graph.call_function(target, args)
    fake_mode = like.meta["val"].fake_mode
    fake_args = map_arg(args, lambda n: n.meta["val"])
    made = _MADE.setdefault(graph, {})
    key = (target, repr(pytree.tree_map(_describe, fake_args)))
    if key not in made:
        with fake_mode:
            made[key] = target(*fake_args)
    node.meta["val"] = made[key]
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in like.meta:
            node.meta[key] = like.meta[key]
    return node


def is_tensor_node(value: Any) -> bool:
    return isinstance(value, fx.Node) and isinstance(value.meta.get("val"), torch.Tensor)
