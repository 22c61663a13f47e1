"""A node's arguments keyed by the ATen schema's names, defaults filled in (cached on the node, for as long as its
arguments are the same: a pass that replaces an input of the node gives it new ones, and the cache is made again)."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

_KEY = "lrpgraph_args"


def normalised_args(node: fx.Node) -> dict[str, Any]:
    """{schema argument name: value} for ATen ops; {"0": …, "1": …} for other callables."""
    cached = node.meta.get(_KEY)
    if cached is not None and cached[0] is node.args and cached[1] is node.kwargs:
        return cached[2]
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        args: dict[str, Any] = {}
        for i, spec in enumerate(target._schema.arguments):
            if i < len(node.args) and not spec.kwarg_only:
                args[spec.name] = node.args[i]
            elif spec.name in node.kwargs:
                args[spec.name] = node.kwargs[spec.name]
            elif spec.has_default_value():
                args[spec.name] = spec.default_value
    else:
        args = {str(i): a for i, a in enumerate(node.args)}
        args.update(node.kwargs)
    node.meta[_KEY] = (node.args, node.kwargs, args)
    return args


def without_cached_args(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of a node's meta for another node: everything but this node's cached arguments."""
    return {k: v for k, v in meta.items() if k != _KEY}
