"""Elementwise ops: sums (add/sub), products and quotients, gates, and pointwise nonlinearities.

Op classes: "add" (kernels take the list of additive terms), "scale" (a product or quotient with
one relevant operand), "product" (two relevant factors), "gate" (a product whose one factor is an
activation or softmax output: act(gate)·up, MoE routing weights), "quotient" (relevant numerator
and denominator) and "activation" (a pointwise function of one relevant tensor).
"""

from __future__ import annotations

import math

import torch

from .adapter import Adapter, RoleKind, is_tensor
from .branch import Residual, branch_vjp
from .complex import COMPLEX, scale_by_constant
from .gradient import Replay, form, ratio, rescaled, share_of, split, stabilized
from .registry import declare, rule
from .table import Facts, describe, register_ops
from .tensors import divide, unbroadcast, writable

aten = torch.ops.aten

ADD = declare("add")
SCALE = declare("scale", absorbs="rules", exact=True)
PRODUCT = declare("product", absorbs="rules")
GATE = declare("gate", absorbs="rules")
QUOTIENT = declare("quotient", absorbs="rules")
ACTIVATION = declare("activation", exact=True)


@rule(ACTIVATION, "pass", default=True)
def pass_through(R, x, out, slope):
    """Identity rule: a pointwise nonlinearity hands its relevance on unchanged (AttnLRP eq. 9)."""
    return R


@rule(ADD, "norm", needs=("terms", "out"), default=True)
def add_norm(R, terms, out, relevant, *, stabilizer: float = 1e-6, sign_aware: bool = True):
    """Epsilon split of a sum: each term gets term/stab(sum)·R; non-relevant terms keep their share. Where no
    relevance arrives nothing leaves, even from an infinite term (a -inf attention mask: not ∞·0 = NaN)."""
    s = divide(R, out.to(R.dtype), stabilizer, sign_aware)
    # an infinite term makes the sum infinite, so s = 0 there: clamped to the largest finite value, the term
    # gives 0 (± 0), not ∞·0 — two float passes instead of a comparison and a select
    return [unbroadcast(_finite_times(t, s), t.shape) if rel else None for t, rel in zip(terms, relevant, strict=True)]


def _finite_times(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """t ⊙ s with t's ±∞ replaced by the largest finite values of its dtype (NaN stays NaN)."""
    if not t.is_floating_point():
        return t * s
    big = torch.finfo(t.dtype).max
    finite = t.clamp(-big, big)
    return finite.mul_(s) if writable(finite, s) else finite * s


@rule(SCALE, "pass", default=True)
def scale_pass(R, operands, relevant):
    """A product or quotient with a constant: all relevance to the one relevant operand."""
    return [unbroadcast(R, op.shape) if rel else None for op, rel in zip(operands, relevant, strict=True)]


@rule(PRODUCT, "uniform", default=True)
def product_uniform(R, operands, relevant):
    """Product of two relevant tensors: each factor gets half (AttnLRP Prop. 3.2); of complex ones, half of each
    real component's gradient × input (`complex_halves`)."""
    if any(op.is_complex() for op in operands):
        return complex_halves(R, operands, relevant)
    half = R / 2
    return [unbroadcast(half, op.shape) if rel else None for op, rel in zip(operands, relevant, strict=True)]


def complex_halves(R, operands, relevant):
    """z = a·b with complex factors is, on real components, a sum of real products (z_re = a_re·b_re − a_im·b_im,
    z_im = a_re·b_im + a_im·b_re): each component's relevance is split among its products in proportion to them, and
    each product's share halved between its factors — for a, ½·a ⊙ ∇_a⟨s, z⟩ on real views with s = R/z per
    component, ∇_a = s·conj(b)."""
    a, b = operands
    z = a * b
    s = torch.complex(ratio(R.real, z.real), ratio(R.imag, z.imag))
    return [
        _half_times(x, s * torch.conj(other)) if rel else None
        for x, other, rel in ((a, b, relevant[0]), (b, a, relevant[1]))
    ]


def _half_times(x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """½·x ⊙ gradient on real components, summed to x's shape (a real x: the real part only)."""
    if not x.is_complex():
        return unbroadcast(x * gradient.real, x.shape) / 2
    return unbroadcast(torch.complex(x.real * gradient.real, x.imag * gradient.imag), x.shape) / 2


@rule(QUOTIENT, "numerator", default=True)
def quotient_numerator(R, operands, relevant):
    """a / b with both relevant: b is a normaliser, all relevance goes to a."""
    return [unbroadcast(R, operands[0].shape), None]


@rule(GATE, "uniform", default=True)
def gate_uniform(R, operands, relevant, gate: int):
    """AttnLRP: a gated product splits uniformly, half to the gate and half to the gated signal (the product's
    uniform rule)."""
    return product_uniform(R, operands, relevant)


@rule(GATE, "constant-gate")
def gate_constant(R, operands, relevant, gate: int):
    """CP-LRP: the gate is a constant; the gated signal gets all the relevance."""
    return [None if i == gate else unbroadcast(R, op.shape) for i, op in enumerate(operands)]


@form(ACTIVATION, "pass")
def pass_form(call: Replay):
    """The identity rule: the input receives all of the output's relevance (none where it is 0 and f(0) is not)."""
    return call.passed(call.get(call.adapter.data), call.out, call.adapter.facts.constant_at_zero)


@form(ADD, "norm")
def add_form(call: Replay, *, stabilizer: float = 1e-6, sign_aware: bool = True):
    """Each term gets ρ·y/stab(y) (constant terms keep their share)."""
    return rescaled(call.held(), share_of(call.out, stabilized(call.out.detach(), stabilizer, sign_aware)))


@form(SCALE, "pass")
def scale_form(call: Replay):
    """A product or quotient with a constant: its gradient times the input is all the relevance."""
    return call.run()


@form((PRODUCT, GATE), "uniform")
def product_form(call: Replay):
    """Half of the gradient to each factor."""
    return split(call.held(), 0.5)


@form(QUOTIENT, "numerator")
def quotient_form(call: Replay):
    return call.run(detach=["other"])


@form(GATE, "constant-gate")
def gate_constant_form(call: Replay):
    """The gate held constant."""
    return call.held(detach=[call.role.operand if call.role is not None else "gate"])


class AddAdapter(Adapter):
    """add/sub/rsub: the output is the sum of the two terms c·operand; scalar operands are constants."""

    def __init__(self, mode: str):
        super().__init__(ADD)
        self.mode = mode

    def _coefficients(self, alpha) -> dict[str, float]:
        return {
            "add": {"self": 1, "other": alpha},
            "sub": {"self": 1, "other": -alpha},
            "rsub": {"self": -alpha, "other": 1},
        }[self.mode]

    def constant_terms(self, args):
        return not all(is_tensor(args.get(n)) for n in ("self", "other"))

    def needs(self, op_class, kernel, args, relevant):
        if "terms" not in kernel.needs:
            return set(), "out" in kernel.needs
        return {n for n in ("self", "other") if is_tensor(args.get(n))}, "out" in kernel.needs

    def role_reads(self, kernel, role):
        """A kernel that needs "branch", at a residual sum: the shortcut and the branch's inputs, to replay it."""
        if "branch" not in kernel.needs or role is None or role.kind is not RoleKind.RESIDUAL:
            return ()
        return (role.branch.shortcut, *role.branch.inputs)

    def apply(self, call):
        args = call.args
        coefficients = self._coefficients(args.get("alpha", 1))
        names = [n for n in ("self", "other") if is_tensor(args.get(n))]
        terms = [args[n] if coefficients[n] == 1 else args[n] * coefficients[n] for n in names]
        relevant = [bool(call.relevant.get(n)) for n in names]
        if "branch" in call.kernel.needs:
            result = call.run(terms, call.out, relevant, self._residual(call, names, coefficients))
        else:
            result = call.run(terms, call.out, relevant)
        return dict(zip(names, result, strict=True))

    def _residual(self, call, names, coefficients) -> Residual | None:
        """At a residual sum (the graph pass's role), the shortcut's index among the terms and the branch term's
        Jacobian with respect to the shortcut's term (the two coefficients c: J = c_branch / c_shortcut · J_f)."""
        role = call.role
        if role is None or role.kind is not RoleKind.RESIDUAL or len(names) != 2:
            return None
        other = names[1 - names.index(role.operand)]
        scale = coefficients[other] / coefficients[role.operand]
        return Residual(names.index(role.operand), branch_vjp(role.branch, call.values, scale))


class ProductAdapter(Adapter):
    """mul/div: class by how many operands carry relevance."""

    def __init__(self, quotient: bool):
        super().__init__(SCALE)
        self.quotient = quotient

    def op_class(self, args, relevant, role):
        both = bool(relevant.get("self")) and bool(relevant.get("other"))
        if not both and not self.quotient and any(_complex(args.get(n)) for n in ("self", "other")):
            return COMPLEX
        if not both:
            return SCALE
        if self.quotient:
            return QUOTIENT
        return GATE if role is not None and role.kind is RoleKind.GATE else PRODUCT

    def needs(self, op_class, kernel, args, relevant):
        complex_product = op_class in (PRODUCT, GATE) and any(_complex(args.get(n)) for n in ("self", "other"))
        reads = "operands" in kernel.needs or op_class is COMPLEX or complex_product
        names = {n for n in ("self", "other") if is_tensor(args.get(n))} if reads else set()
        return names, "out" in kernel.needs

    def apply(self, call):
        if call.op_class is COMPLEX:  # a complex tensor times a constant: a real-linear map
            data = "self" if call.relevant.get("self") else "other"
            return scale_by_constant(call, data, "other" if data == "self" else "self")
        names = [n for n in ("self", "other") if is_tensor(call.args.get(n))]
        operands = [call.args[n] for n in names]
        relevant = [bool(call.relevant.get(n)) for n in names]
        if call.op_class is GATE:
            gate = names.index(call.role.operand)
            result = call.run(operands, relevant, gate)
        else:
            result = call.run(operands, relevant)
        return dict(zip(names, result, strict=True))


class PointwiseAdapter(Adapter):
    """A pointwise function of its first argument (extra arguments are constants).

    Kernels get `slope(x)`, the function's derivative at x (None for functions without one in SLOPES).

    Where f(0) ≠ 0 (`constant_at_zero`: exp, sigmoid, cos, …) an input of exactly 0 carries none of the output
    f(0), a constant: relevance arriving there stays with it (booked under "constants"), as x·∂f/∂x-based rules
    (LXT's identity rule, R_x = x·R_y/(x + ε)) give it, rather than moving onto a zero.
    """

    def __init__(self, activation: bool, constant_at_zero: bool = False):
        super().__init__(ACTIVATION)
        gate = "activation" if activation else None
        self.facts = Facts(pointwise=True, gate_source=gate, constant_at_zero=constant_at_zero)

    def needs(self, op_class, kernel, args, relevant):
        names, out = super().needs(op_class, kernel, args, relevant)
        return (names | {self.data} if self.facts.constant_at_zero else names), out

    def constant_terms(self, args):
        return self.facts.constant_at_zero

    def conserves(self, args, relevant):
        return not self.facts.constant_at_zero

    def apply(self, call):
        derivative = SLOPES.get(call.op)
        slope = None if derivative is None else (lambda x: derivative(x, call.args))
        x = call.args[self.data]
        relevance = call.run(x, call.out, slope)
        if self.facts.constant_at_zero:
            relevance = torch.where(x == 0, torch.zeros((), dtype=relevance.dtype), relevance)
        return {self.data: relevance}


def _complex(value) -> bool:
    val = getattr(value, "meta", {}).get("val")
    return isinstance(val, torch.Tensor) and val.is_complex()


def _gelu_slope(x, args):
    if args.get("approximate", "none") == "tanh":
        c = math.sqrt(2 / math.pi)
        inner = c * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _silu_slope(x, args):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


# derivatives of activations, for rules that need f'(x) (absLRP): (x, the node's arguments) → f'(x)
SLOPES = {
    aten.relu.default: lambda x, a: (x > 0).to(x.dtype),
    aten.gelu.default: _gelu_slope,
    aten.silu.default: _silu_slope,
    aten.sigmoid.default: lambda x, a: torch.sigmoid(x) * (1 - torch.sigmoid(x)),
    aten.tanh.default: lambda x, a: 1 - torch.tanh(x) ** 2,
    aten.leaky_relu.default: lambda x, a: torch.where(x > 0, 1.0, float(a.get("negative_slope", 0.01))).to(x.dtype),
}


_OPERANDS = ("self", "other")
register_ops(AddAdapter("add"), aten.add.Tensor, aten.add.Scalar, arithmetic="sum", operands=_OPERANDS)
register_ops(
    AddAdapter("sub"),
    aten.sub.Tensor,
    aten.sub.Scalar,
    aten.subtract.Tensor,
    arithmetic="difference",
    operands=_OPERANDS,
)
register_ops(
    AddAdapter("rsub"), aten.rsub.Tensor, aten.rsub.Scalar, arithmetic="difference", operands=("other", "self")
)
register_ops(
    ProductAdapter(quotient=False),
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.multiply.Tensor,
    arithmetic="product",
    operands=_OPERANDS,
)
register_ops(
    ProductAdapter(quotient=True),
    aten.div.Tensor,
    aten.div.Scalar,
    aten.divide.Tensor,
    arithmetic="quotient",
    operands=_OPERANDS,
)

ACTIVATIONS = [
    aten.relu.default,
    aten.relu6.default,
    aten.gelu.default,
    aten.silu.default,
    aten.tanh.default,
    aten.elu.default,
    aten.selu.default,
    aten.celu.default,
    aten.leaky_relu.default,
    aten.hardtanh.default,
    aten.hardswish.default,
    aten.mish.default,
    aten.log.default,
    aten.log1p.default,
    aten.expm1.default,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.reciprocal.default,
    aten.sin.default,
    aten.tan.default,
    aten.asin.default,
    aten.atan.default,
    aten.sinh.default,
    aten.asinh.default,
    aten.atanh.default,
    aten.erf.default,
    aten.log2.default,
    aten.log10.default,
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
    aten.floor.default,  # piecewise constant, 0 at 0, like sign
    aten.ceil.default,
    aten.round.default,
    aten.trunc.default,
]
register_ops(PointwiseAdapter(activation=True), *ACTIVATIONS)
CONSTANT_AT_ZERO = [  # f(0) ≠ 0
    aten.sigmoid.default,
    aten.hardsigmoid.default,
    aten.softplus.default,
    aten.log_sigmoid.default,
    aten.exp.default,
    aten.exp2.default,
    aten.cos.default,
    aten.cosh.default,
    aten.acos.default,
    aten.erfc.default,
]
register_ops(PointwiseAdapter(activation=True, constant_at_zero=True), *CONSTANT_AT_ZERO)
# pointwise functions that do not act as a gate when multiplied with a signal
register_ops(PointwiseAdapter(activation=False), aten.neg.default)
register_ops(PointwiseAdapter(activation=False), aten.abs.default, aten.square.default, statistic="square")
register_ops(PointwiseAdapter(activation=False), aten.pow.Tensor_Scalar, statistic="square", power="exponent")
describe(aten.cos.default, trig="cos")
describe(aten.sin.default, trig="sin")
# what keeps a second moment a normalisation scale: sums with and products by constants, roots, reciprocals, bounds
describe(
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
    scale_chain=True,
)
REDIRECT = PointwiseAdapter(activation=False)  # a pointwise region found by a graph pass: relevance to its input
