"""Helpers for passes that insert nodes: compute each new node's fake value and module stack."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch.fx.node import map_arg


def insert_call(graph: fx.Graph, target: Any, args: tuple, like: fx.Node) -> fx.Node:
    """Add `target(*args)` to the graph (at the current insertion point) with meta copied from `like`."""
    node = graph.call_function(target, args)
    fake_mode = like.meta["val"].fake_mode
    fake_args = map_arg(args, lambda n: n.meta["val"])
    with fake_mode:
        node.meta["val"] = target(*fake_args)
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in like.meta:
            node.meta[key] = like.meta[key]
    return node


def is_tensor_node(value: Any) -> bool:
    return isinstance(value, fx.Node) and isinstance(value.meta.get("val"), torch.Tensor)
