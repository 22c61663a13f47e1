"""Find normalisation scales written out as ops, so rules treat them as constants (AttnLRP Prop. 3.4).

RMSNorm as `x * rsqrt(mean(x²) + eps)`, a hand-written layer norm `(x − μ) / sqrt(var + eps)`,
`F.normalize` as `x / norm(x)`: a product or quotient of a tensor with a function of its own second
moment. The factor holding the second moment is returned; the flow analysis then cuts it, so the
product becomes a scaling of x by a constant. Casts in between (float32 upcasts) are looked through.
"""

from __future__ import annotations

from torch import fx

from ..capture.node_args import normalised_args
from ..ops.table import facts


def normalisation_scales(graph: fx.Graph, relevant: set[fx.Node]) -> set[fx.Node]:
    """Operands of products/quotients that scale a tensor by a function of its own second moment."""
    scales: set[fx.Node] = set()
    for node in graph.nodes:
        arithmetic = facts(node.target).arithmetic
        if node.op != "call_function" or arithmetic not in ("product", "quotient") or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and a in relevant and b in relevant):
            continue
        pairs = [(a, b)] if arithmetic == "quotient" else [(a, b), (b, a)]
        for numerator, factor in pairs:
            moment_input = _moment_input(factor, relevant)
            if moment_input is not None and _same_base(moment_input, numerator):
                scales.add(factor)
    return scales


def held_statistics(graph: fx.Graph, relevant: set[fx.Node]) -> set[fx.Node]:
    """Second moments relevance would reach outside a normalisation scale (Gemma 3n's sparsity cutoff, mean + c·std
    subtracted from its input): held constant like the scales, so their share stays where they are used, as a
    bias's does."""
    return {n for n in graph.nodes if n in relevant and facts(n.target).statistic == "moment"}


def _moment_input(node: fx.Node, relevant: set[fx.Node], depth: int = 0) -> fx.Node | None:
    """Follow a scale chain up to a second-moment statistic; return the tensor it was taken of. Several
    tensor operands (ConvNeXt-V2's GRN: ‖x‖ / mean(‖x‖)) must all lead to the same one."""
    if not isinstance(node, fx.Node) or depth > 32:
        return None
    f = facts(node.target)
    if f.statistic == "moment":
        return node.args[0]
    if f.statistic == "mean":
        square = node.args[0]
        if _is_square(square):
            return square.args[0]
        return _moment_input(square, relevant, depth + 1)  # a mean of a statistic
    if not f.scale_chain:
        return None
    shape_only = set(f.shape_only)  # expand_as's `other`: its shape is read, not its value
    named = normalised_args(node).items() if shape_only else enumerate(node.args)
    operands = [n for k, n in named if isinstance(n, fx.Node) and n in relevant and k not in shape_only]
    found = {_moment_input(n, relevant, depth + 1) for n in operands}
    return found.pop() if len(found) == 1 and None not in found else None


def _is_square(node) -> bool:
    """x², |x|, or x·x."""
    if not isinstance(node, fx.Node):
        return False
    f = facts(node.target)
    if f.statistic == "square":
        return f.power is None or normalised_args(node).get(f.power) == 2
    return f.arithmetic == "product" and len(node.args) >= 2 and node.args[0] is node.args[1]


def _base(node):
    while isinstance(node, fx.Node) and facts(node.target).copy:
        node = node.args[0]
    return node


def _same_base(moment_input: fx.Node, numerator: fx.Node) -> bool:
    source, target = _base(moment_input), _base(numerator)
    if source is target:
        return True
    # (x − μ) / sqrt(mean((x − μ)²)) where the numerator is x − μ computed again, or x itself
    centred = _minuend(source)
    if centred is not None and (_base(centred) is target or _base(_minuend(target)) is _base(centred)):
        return True
    # (x − μ) / sqrt(var(x) + ε): the statistic centres x itself (var, std), the numerator is x − μ
    return _base(_minuend(target)) is source


def _minuend(node) -> fx.Node | None:
    """x of x − μ, a difference of two tensors; None for anything else."""
    if not isinstance(node, fx.Node):
        return None
    f = facts(node.target)
    if f.arithmetic != "difference":
        return None
    args = normalised_args(node)
    x, mu = (args.get(name) for name in f.operands)
    return x if isinstance(x, fx.Node) and isinstance(mu, fx.Node) else None
