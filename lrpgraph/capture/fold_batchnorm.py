"""Fold eval-mode batch norm into the conv or linear layer before it (Zennit's MergeBatchNorm canonizer).

conv(x, w, b) → batch_norm(running stats) becomes conv(x, w·s, (b − μ)·s + β) with s = γ/√(σ²+ε),
computed in the graph from the current parameters, so the layer's rule sees one affine map.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from .node_args import normalised_args
from .rewrite import insert_call

aten = torch.ops.aten
_LAYERS = {aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.linear.default}


def foldable(graph: fx.Graph) -> bool:
    """Whether some eval batch norm follows a conv or linear layer it could be merged into."""
    norms = graph.find_nodes(op="call_function", target=aten._native_batch_norm_legit_no_training.default)
    return any(_foldable(bn.args[0], bn) for bn in norms)


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Rewrite every foldable conv/linear → eval batch norm pair; returns how many were folded."""
    graph = gm.graph
    folded = 0
    for bn in list(graph.find_nodes(op="call_function", target=aten._native_batch_norm_legit_no_training.default)):
        layer = bn.args[0]
        if not _foldable(layer, bn):
            continue
        bn_args, layer_args = normalised_args(bn), normalised_args(layer)
        with graph.inserting_before(bn):
            var_eps = insert_call(graph, aten.add.Tensor, (bn_args["running_var"], float(bn_args["eps"])), layer)
            scale = insert_call(graph, aten.rsqrt.default, (var_eps,), layer)
            if bn_args["weight"] is not None:
                scale = insert_call(graph, aten.mul.Tensor, (bn_args["weight"], scale), layer)
            weight = layer_args["weight"]
            rank = weight.meta["val"].dim()
            column = insert_call(graph, aten.view.default, (scale, [-1] + [1] * (rank - 1)), layer)
            new_weight = insert_call(graph, aten.mul.Tensor, (weight, column), layer)
            bias = layer_args.get("bias")
            shifted = insert_call(graph, aten.neg.default, (bn_args["running_mean"],), layer)
            if bias is not None:
                shifted = insert_call(graph, aten.add.Tensor, (bias, shifted), layer)
            new_bias = insert_call(graph, aten.mul.Tensor, (shifted, scale), layer)
            if bn_args["bias"] is not None:
                new_bias = insert_call(graph, aten.add.Tensor, (new_bias, bn_args["bias"]), layer)
            rest = [layer_args[k] for k in ("stride", "padding", "dilation", "groups") if k in layer_args]
            args = (layer_args["input"], new_weight, new_bias, *rest)
            merged = insert_call(graph, layer.target, args, layer)
        for user in list(bn.users):
            user.replace_all_uses_with(merged)
            graph.erase_node(user)
        graph.erase_node(bn)
        graph.erase_node(layer)
        folded += 1
    if folded:
        gm.recompile()
    return folded


def _foldable(layer, bn: fx.Node) -> bool:
    if not isinstance(layer, fx.Node) or layer.target not in _LAYERS or len(layer.users) != 1:
        return False
    if layer.target is aten.linear.default and layer.meta["val"].dim() != 2:
        return False
    return all(u.target is operator.getitem and u.args[1] == 0 for u in bn.users)
