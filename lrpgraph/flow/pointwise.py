"""Find pointwise functions written out of several ops — x·sigmoid(x), GPT-2's tanh GELU, mish —
so the whole region gets the identity rule of a nonlinearity instead of product rules.

A node is *pointwise in* r when it is computed from r alone by elementwise ops (constants aside)
without changing shape. A sum or product whose relevant operands are all pointwise in the same r
is such a region's output: its relevance is redirected straight to r.
"""

from __future__ import annotations

import torch
from torch import fx

from ..capture.shapes import same_shape
from ..ops.table import facts


def pointwise_regions(graph: fx.Graph, relevant: set[fx.Node]) -> dict[fx.Node, fx.Node]:
    """{region output: the one tensor it is a pointwise function of}."""
    root: dict[fx.Node, fx.Node] = {}
    redirects: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node not in relevant:
            continue
        inputs = [n for n in node.all_input_nodes if n in relevant]
        if not inputs or not _same_shape(node, inputs):
            continue
        f = facts(node.target)
        if f.pointwise or f.copy or (f.arithmetic and len(inputs) == 1):
            root[node] = root.get(inputs[0], inputs[0])
        elif f.arithmetic:
            roots = {root.get(n, n) for n in inputs}
            if len(roots) == 1:
                (r,) = roots
                if _same_shape(node, [r]):
                    root[node] = r
                    redirects[node] = r
    return redirects


def _same_shape(node: fx.Node, others: list[fx.Node]) -> bool:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return False
    return all(
        isinstance(o.meta.get("val"), torch.Tensor) and same_shape(o.meta["val"].shape, val.shape) for o in others
    )
