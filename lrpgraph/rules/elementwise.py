"""Elementwise ops: sums (add/sub), products and quotients, and pointwise nonlinearities.

Op classes: "add" (kernels take the list of additive terms), "scale" (a product or quotient with
one relevant operand), "product" (two relevant factors), "quotient" (relevant numerator and
denominator) and "activation" (a pointwise function of one relevant tensor).
"""

from __future__ import annotations

import torch

from ..registry import register_ops, rule
from .adapter import Adapter, is_tensor
from .tensors import stabilize, unbroadcast

aten = torch.ops.aten


@rule("activation", "pass", default=True)
def pass_through(R, x, out):
    """Identity rule: a pointwise nonlinearity hands its relevance on unchanged (AttnLRP eq. 9)."""
    return R


@rule("add", "norm", needs=("terms", "out"), default=True)
def add_norm(R, terms, out, relevant, *, stabilizer: float = 1e-6):
    """Epsilon split of a sum: each term gets term/stab(sum)·R; non-relevant terms keep their share."""
    s = R / stabilize(out.to(R.dtype), stabilizer)
    return [unbroadcast(t * s, t.shape) if rel else None for t, rel in zip(terms, relevant, strict=True)]


@rule("scale", "pass", default=True)
def scale_pass(R, operands, relevant):
    """A product or quotient with a constant: all relevance to the one relevant operand."""
    return [unbroadcast(R, op.shape) if rel else None for op, rel in zip(operands, relevant, strict=True)]


@rule("product", "uniform", default=True)
def product_uniform(R, operands, relevant):
    """Product of two relevant tensors: each factor gets half (AttnLRP Prop. 3.2)."""
    half = R / 2
    return [unbroadcast(half, op.shape) if rel else None for op, rel in zip(operands, relevant, strict=True)]


@rule("quotient", "numerator", default=True)
def quotient_numerator(R, operands, relevant):
    """a / b with both relevant: b is a normaliser, all relevance goes to a."""
    return [unbroadcast(R, operands[0].shape), None]


class AddAdapter(Adapter):
    """add/sub/rsub: the output is the sum of the two terms c·operand; scalar operands are constants."""

    family = "add"

    def __init__(self, mode: str):
        super().__init__("add")
        self.mode = mode

    def _coefficients(self, alpha) -> dict[str, float]:
        return {
            "add": {"self": 1, "other": alpha},
            "sub": {"self": 1, "other": -alpha},
            "rsub": {"self": -alpha, "other": 1},
        }[self.mode]

    def needs(self, op_class, kernel, args, relevant):
        if "terms" not in kernel.needs:
            return set(), "out" in kernel.needs
        return {n for n in ("self", "other") if is_tensor(args.get(n))}, "out" in kernel.needs

    def apply(self, call):
        args = call.args
        coefficients = self._coefficients(args.get("alpha", 1))
        names = [n for n in ("self", "other") if is_tensor(args.get(n))]
        terms = [args[n] if coefficients[n] == 1 else args[n] * coefficients[n] for n in names]
        result = call.run(terms, call.out, [bool(call.relevant.get(n)) for n in names])
        return dict(zip(names, result, strict=True))


class ProductAdapter(Adapter):
    """mul/div: class by how many operands carry relevance."""

    family = "product"

    def __init__(self, quotient: bool):
        super().__init__("scale")
        self.quotient = quotient

    def op_class(self, args, relevant, role):
        both = bool(relevant.get("self")) and bool(relevant.get("other"))
        if not both:
            return "scale"
        if self.quotient:
            return "quotient"
        return "gate" if role is not None and role.startswith("gate:") else "product"

    def needs(self, op_class, kernel, args, relevant):
        names = {n for n in ("self", "other") if is_tensor(args.get(n))} if "operands" in kernel.needs else set()
        return names, "out" in kernel.needs

    def apply(self, call):
        names = [n for n in ("self", "other") if is_tensor(call.args.get(n))]
        operands = [call.args[n] for n in names]
        relevant = [bool(call.relevant.get(n)) for n in names]
        if call.op_class == "gate":
            gate = names.index(call.role.split(":", 1)[1])
            result = call.run(operands, relevant, gate)
        else:
            result = call.run(operands, relevant)
        return dict(zip(names, result, strict=True))


class PointwiseAdapter(Adapter):
    """A pointwise function of its first argument (extra arguments are constants)."""

    family = "pointwise"

    def __init__(self, data: str = "self"):
        super().__init__("activation", data)


register_ops(AddAdapter("add"), aten.add.Tensor, aten.add.Scalar)
register_ops(AddAdapter("sub"), aten.sub.Tensor, aten.sub.Scalar)
register_ops(AddAdapter("rsub"), aten.rsub.Tensor, aten.rsub.Scalar)
register_ops(ProductAdapter(quotient=False), aten.mul.Tensor, aten.mul.Scalar)
register_ops(ProductAdapter(quotient=True), aten.div.Tensor, aten.div.Scalar)

POINTWISE = [
    aten.relu.default,
    aten.relu6.default,
    aten.gelu.default,
    aten.silu.default,
    aten.sigmoid.default,
    aten.tanh.default,
    aten.elu.default,
    aten.selu.default,
    aten.celu.default,
    aten.leaky_relu.default,
    aten.hardtanh.default,
    aten.hardsigmoid.default,
    aten.hardswish.default,
    aten.softplus.default,
    aten.mish.default,
    aten.log_sigmoid.default,
    aten.exp.default,
    aten.log.default,
    aten.log1p.default,
    aten.expm1.default,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.reciprocal.default,
    aten.abs.default,
    aten.neg.default,
    aten.sin.default,
    aten.cos.default,
    aten.erf.default,
    aten.square.default,
    aten.pow.Tensor_Scalar,
    aten.clamp.default,
    aten.clamp.Tensor,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.threshold.default,
    aten.prelu.default,
    aten.softshrink.default,
    aten.hardshrink.default,
    aten.logit.default,
    aten.sign.default,
    aten.sgn.default,
]
register_ops(PointwiseAdapter(), *POINTWISE)
