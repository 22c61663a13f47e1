"""Find normalisation scales written out as ops, so rules treat them as constants (AttnLRP Prop. 3.4).

RMSNorm as `x * rsqrt(mean(x²) + eps)`, a hand-written layer norm `(x − μ) / sqrt(var + eps)`,
`F.normalize` as `x / norm(x)`: a product or quotient of a tensor with a function of its own second
moment. The factor holding the second moment is returned; the flow analysis then cuts it, so the
product becomes a scaling of x by a constant. Casts in between (float32 upcasts) are looked through.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten

_MOMENTS = {
    aten.var.correction,
    aten.var.dim,
    aten.var.default,
    aten.std.correction,
    aten.std.dim,
    aten.std.default,
    aten.var_mean.correction,
    aten.var_mean.dim,
    aten.std_mean.correction,
    aten.std_mean.dim,
    aten.linalg_vector_norm.default,
    aten.norm.ScalarOpt_dim,
    aten.norm.Scalar,
}
_REDUCTIONS = {aten.mean.dim, aten.mean.default, aten.sum.dim_IntList, aten.sum.default}
_SQUARES = {aten.pow.Tensor_Scalar, aten.square.default, aten.abs.default}
# ops that turn a statistic into a scale: one tensor operand, the others constants
_SCALE_CHAIN = {
    aten.add.Tensor,
    aten.add.Scalar,
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.div.Tensor,
    aten.div.Scalar,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.reciprocal.default,
    aten.pow.Tensor_Scalar,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.expand.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.unsqueeze.default,
    aten._to_copy.default,
    aten.clone.default,
    aten.alias.default,
    aten.expand_as.default,
    operator.getitem,
}
_CASTS = {aten._to_copy.default, aten.clone.default, aten.alias.default, aten.contiguous.default}
_PRODUCTS = {aten.mul.Tensor, aten.div.Tensor}


def normalisation_scales(graph: fx.Graph, relevant: set[fx.Node]) -> set[fx.Node]:
    """Operands of products/quotients that scale a tensor by a function of its own second moment."""
    scales: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in _PRODUCTS or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and a in relevant and b in relevant):
            continue
        pairs = [(a, b)] if node.target is aten.div.Tensor else [(a, b), (b, a)]
        for numerator, factor in pairs:
            moment_input = _moment_input(factor, relevant)
            if moment_input is not None and _same_base(moment_input, numerator):
                scales.add(factor)
    return scales


def _moment_input(node: fx.Node, relevant: set[fx.Node], depth: int = 0) -> fx.Node | None:
    """Follow a scale chain up to a second-moment statistic; return the tensor it was taken of. Several
    tensor operands (ConvNeXt-V2's GRN: ‖x‖ / mean(‖x‖)) must all lead to the same one."""
    if not isinstance(node, fx.Node) or depth > 32:
        return None
    if node.target in _MOMENTS:
        return node.args[0]
    if node.target in _REDUCTIONS:
        square = node.args[0]
        is_square = isinstance(square, fx.Node) and square.target in _SQUARES
        if is_square and (square.target is not aten.pow.Tensor_Scalar or square.args[1] == 2):
            return square.args[0]
        if isinstance(square, fx.Node) and square.target is aten.mul.Tensor and square.args[0] is square.args[1]:
            return square.args[0]
        return _moment_input(square, relevant, depth + 1)  # a mean of a statistic
    if node.target not in _SCALE_CHAIN:
        return None
    operands = [n for n in node.args if isinstance(n, fx.Node) and n in relevant]
    found = {_moment_input(n, relevant, depth + 1) for n in operands}
    return found.pop() if len(found) == 1 and None not in found else None


def _base(node):
    while isinstance(node, fx.Node) and node.target in _CASTS:
        node = node.args[0]
    return node


def _same_base(moment_input: fx.Node, numerator: fx.Node) -> bool:
    source, target = _base(moment_input), _base(numerator)
    if source is target:
        return True
    # (x − μ) / sqrt(mean((x − μ)²)) where the numerator is x − μ computed again, or x itself
    return (
        isinstance(source, fx.Node)
        and source.target in (aten.sub.Tensor,)
        and (
            _base(source.args[0]) is target
            or (
                isinstance(target, fx.Node)
                and target.target is aten.sub.Tensor
                and _base(target.args[0]) is _base(source.args[0])
            )
        )
    )
