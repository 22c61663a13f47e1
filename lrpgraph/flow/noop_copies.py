"""Remove copies that change nothing: `.to()` to the same dtype and device, aliases, detaches, slices of all.

The exported graph is functional, so there `.to(x.dtype)` is a real `_to_copy`, where eager PyTorch
returns the tensor itself; RMSNorm-style upcasts in float32 models make dozens of such copies.
Nothing in the graph writes to a tensor, so dropping them changes no value. `clone` is kept: a
later `view` may depend on the contiguous copy it makes. `x[:, :, t]` exports as two slices that keep every
value, then a select: without them each step's select reads x itself (`selects.py` then finds all of them).
"""

from __future__ import annotations

import sys

import torch
from torch import fx

from ..capture.node_args import normalised_args
from ..capture.shapes import known_int, same_shape
from ..ops.table import facts


def remove_noop_copies(gm: fx.GraphModule) -> int:
    """Drop aliases and casts to what a value already is; returns how many were removed."""
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        f = facts(node.target)
        if f.alias or (f.cast and _same(source, node)) or _slice_of_all(node):
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            removed += 1
    return removed


def _slice_of_all(node: fx.Node) -> bool:
    """x[..., :, ...]: a span with step 1 from 0 to the end (the largest int, or at least the dim's size)."""
    if not facts(node.target).spans:
        return False
    args = normalised_args(node)
    value, dim, end = args["self"].meta.get("val"), args.get("dim", 0), args.get("end")
    if not isinstance(value, torch.Tensor) or args.get("step", 1) != 1 or args.get("start") not in (0, None):
        return False
    size = known_int(value.shape[dim])
    return end is None or (isinstance(end, int) and (end >= sys.maxsize or (size is not None and end >= size)))


def _same(source: fx.Node, node: fx.Node) -> bool:
    a, b = source.meta.get("val"), node.meta.get("val")
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if node.kwargs.get("memory_format") not in (None, torch.preserve_format):
        return False
    return a.dtype == b.dtype and a.device == b.device and a.layout == b.layout and same_shape(a.stride(), b.stride())
