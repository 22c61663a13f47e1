"""ATen ops that are layers with weights: linear, mm/bmm/matmul/addmm/baddbmm, convolutions.

With one relevant operand they are layers (op class "linear" or "conv", kernels in layer_rules.py
on the maps of linear_maps.py); a matrix product of two relevant operands is op class "matmul"
(bilinear.py), or "attention_values" when one operand is attention probabilities (attention.py).
"""

from __future__ import annotations

import dataclasses

import torch

from .adapter import Adapter, LayerAdapter, Role, RoleKind
from .attention import ATTENTION_VALUES, masked_to_zero
from .bilinear import MATMUL, Bilinear
from .layer_rules import CONV, LINEAR
from .linear_maps import Conv, Dense, MatMul
from .sparse import RowSparse
from .table import Facts, register_ops
from .tensors import divide, nonzero_rows, put_rows, stabilize, take_rows, unbroadcast

aten = torch.ops.aten


def _product_class(role: Role | None):
    """Op class of a matrix product of two relevant operands."""
    return ATTENTION_VALUES if role is not None and role.kind is RoleKind.ATTENTION else MATMUL


class LinearAdapter(Adapter):
    """aten.linear(input, weight, bias): x @ wᵀ + b."""

    data = "input"
    always = ("weight", "bias")
    bias = "bias"
    facts = Facts(expensive=True, matmul=True, operands=("input", "weight"))

    def batched(self, op_class):
        return op_class is LINEAR  # a dense layer acts on the last dim: K relevance maps broadcast over x and z

    def row_sparse(self, op_class):
        return op_class is LINEAR  # a dense layer acts on each row alone

    def needs(self, op_class, kernel, args, relevant):
        if op_class is not LINEAR:
            return {"input", "weight"}, "out" in kernel.needs
        return super().needs(op_class, kernel, args, relevant)

    def op_class(self, args, relevant, role):
        return LINEAR if not relevant.get("weight") else _product_class(role)

    def layer_keys(self, args, relevant):
        return "input", "weight", "bias"

    def apply(self, call):
        args = call.args
        if call.op_class is not LINEAR:
            if args.get("bias") is not None:
                raise TypeError("bilinear rules do not take a bias term")
            ra, rb = _bilinear(call, "input", "weight", _LINEAR_PRODUCT)
            return {"input": ra, "weight": rb}
        return {"input": _rowwise(call, args["input"], lambda x: Dense(x.shape, args["weight"], args.get("bias")))}


class MatmulAdapter(Adapter):
    """mm, bmm, matmul, addmm, baddbmm: a layer when one operand is constant, bilinear otherwise."""

    def __init__(self, a: str, b: str, bias: str | None = None):
        super().__init__(LINEAR)
        self.a, self.b, self.bias = a, b, bias
        self.facts = Facts(expensive=True, mixes_positions=True, matmul=True, operands=(a, b))

    def op_class(self, args, relevant, role):
        if not (relevant.get(self.a) and relevant.get(self.b)):
            return LINEAR
        return _product_class(role)

    def _data(self, relevant) -> str:
        return self.a if relevant.get(self.a) else self.b

    def layer_keys(self, args, relevant):
        data = self._data(relevant)
        return data, self.b if data == self.a else self.a, self.bias

    def needs(self, op_class, kernel, args, relevant):
        out = "out" in kernel.needs
        if op_class is not LINEAR:
            with_bias = {self.bias} if self.bias and args.get(self.bias) is not None else set()
            return {self.a, self.b} | with_bias, True
        data = self._data(relevant)
        names = {self.b if data == self.a else self.a}
        if self.bias and args.get(self.bias) is not None:
            names.add(self.bias)
        if "x" in kernel.needs:
            names.add(data)
        return names, out

    def apply(self, call):
        args = call.args
        if call.op_class is not LINEAR:
            bias = args.get(self.bias) if self.bias else None
            result = {}
            if bias is not None:  # beta·bias + alpha·(a@b): epsilon split first; a relevant bias gets its share
                beta, alpha = float(args.get("beta", 1.0)), float(args.get("alpha", 1.0))
                if call.relevant.get(self.bias):
                    share = divide(call.R, call.out, call.params.get("epsilon", 1e-6))
                    term = beta * masked_to_zero(bias.to(share.dtype))  # a −inf mask entry keeps nothing
                    result[self.bias] = unbroadcast(term * share, bias.shape)
                call = _without_bias(call, bias, beta, alpha)
            ra, rb = _bilinear(call, self.a, self.b, _MATMUL_PRODUCT)
            return {**result, self.a: ra, self.b: rb}
        data = self._data(call.relevant)
        weight = args[self.b if data == self.a else self.a]
        bias = args.get(self.bias) if self.bias else None
        beta, alpha = float(args.get("beta", 1.0)), float(args.get("alpha", 1.0))

        def layer(x):
            return MatMul(x.shape, weight, bias, weight_first=data == self.b, beta=beta, alpha=alpha)

        if data == self.a and weight.dim() == 2 and (bias is None or bias.dim() <= 1):
            return {data: _rowwise(call, args[data], layer)}
        return {data: call.run(args[data], layer(args[data]), call.out)}


def _rowwise(call, x, build):
    """Run a layer kernel on the rows where R is nonzero only (the map acts on the last dim alone)."""
    per_element = any(isinstance(v, torch.Tensor) and v.dim() > 1 for v in call.params.values())
    widening = call.R.shape[-1] >= 2 * x.shape[-1]  # vocabulary heads, MLP up-projections: worth a look
    if isinstance(call.R, RowSparse):
        if call.R.maps is not None:
            return _per_map_rows(call, x, build, call.R)
        index, R_rows = call.R.index, call.R.values
    else:
        shortcut = widening and not per_element and not call.vmapped and call.kernel.linear
        index = nonzero_rows(call.R, call.lead) if shortcut else None
        if index is None:
            return call.run(x, build(x), call.out)
        R_rows = take_rows(call.R, index, call.lead)
    x_rows = take_rows(x, index)
    out = call.out if call.out.device.type == "meta" else take_rows(call.out, index)
    layer = build(x_rows)
    if isinstance(layer, Dense) and call.kernel.linear and not call.vmapped:
        R_rows, layer, out = _live_columns(R_rows, layer, out)
    r = call.run_on(R_rows, x_rows, layer, out)
    return put_rows(r, index, (*call.R.shape[: call.lead], *x.shape), call.lead)


_WIDE = 8  # a dense layer with this many times more outputs than inputs (a vocabulary head) is worth a look


def _live_columns(R: torch.Tensor, layer: Dense, out: torch.Tensor) -> tuple[torch.Tensor, Dense, torch.Tensor]:
    """(R, layer, out) at the output columns R reaches, when it reaches few (a token seed at a vocabulary head).

    A rule linear in R gives each column's share from that column's weights and output alone, so the other
    columns would add exact zeros: leaving them out skips most of the head's adjoint product."""
    width = R.shape[-1]
    if width < _WIDE * layer.weight.shape[-1]:
        return R, layer, out
    live = R.reshape(-1, width).ne(0).any(0).nonzero().squeeze(1)
    if live.numel() * _WIDE > width:
        return R, layer, out
    if out.device.type == "meta":
        out = out.new_empty((*out.shape[:-1], live.numel()))
    else:
        out = out.index_select(-1, live.to(out.device))
    return R.index_select(-1, live), layer.columns(live), out


def _per_map_rows(call, x, build, R: RowSparse) -> torch.Tensor:
    """K seeds, each with relevance in its own rows (a generated token each): the kernel runs on each
    (map, row) entry once, then the result is laid out as K dense maps."""
    x_rows = take_rows(x, R.index)
    out = call.out if call.out.device.type == "meta" else take_rows(call.out, R.index)
    r = call.run_on(R.values, x_rows, build(x_rows), out)
    per_map = x.numel() // x.shape[-1]
    dense = r.new_zeros((R.shape[0] * per_map, x.shape[-1]))
    return dense.index_copy_(0, R.maps * per_map + R.index, r).reshape(R.shape[0], *x.shape)


def _without_bias(call, bias, beta: float, alpha: float):
    """The call seen by the bilinear rule on a@b alone: R of the product term, out = a@b."""
    product = call.out - beta * bias.to(call.out.dtype)
    # where the bias is infinite (an additive −inf mask) so is the output and the subtraction is NaN: the product
    # there gets no relevance (it is finite beside an infinite sum), so it is 0 rather than unknown
    product = torch.where(torch.isfinite(bias), product, torch.zeros((), dtype=product.dtype, device=product.device))
    share = product.to(call.R.dtype) / stabilize(call.out.to(call.R.dtype), call.params.get("epsilon", 1e-6))
    return dataclasses.replace(call, R=call.R * share, out=product / alpha)


def _bilinear(call, a: str, b: str, product: Bilinear):
    """Call a bilinear kernel; attention-value kernels also learn which operand holds the probabilities."""
    if call.op_class is ATTENTION_VALUES:
        probs_first = call.role.operand == a
        return call.run(call.args[a], call.args[b], call.out, product, probs_first)
    return call.run(call.args[a], call.args[b], call.out, product)


def _conv_layer(transposed: bool | None):
    def build(args):
        x, w = args["input"], args["weight"]
        padding, extra = args["padding"], None
        if isinstance(padding, str):
            padding, extra = _string_padding(padding, w, args)
        return Conv(
            x.shape,
            w,
            args.get("bias"),
            args["stride"],
            padding,
            args["dilation"],
            args["transposed"] if transposed is None else transposed,
            args.get("output_padding", 0),
            args["groups"],
            extra,
        )

    return build


def _string_padding(padding: str, weight: torch.Tensor, args) -> tuple[list[int], list[int] | None]:
    """(padding on both sides, the extra on the end side or None) for padding='valid' or 'same'; as torch pads
    'same' with an even effective kernel: half on both sides, the odd one at the end."""
    dims = weight.dim() - 2
    if padding == "valid":
        return [0] * dims, None
    dilation = args["dilation"]
    dilation = [dilation] * dims if isinstance(dilation, int) else list(dilation) * (dims if len(dilation) == 1 else 1)
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
    extra = [t % 2 for t in totals]
    return [t // 2 for t in totals], (extra if any(extra) else None)


_MATMUL_PRODUCT = Bilinear(
    forward=lambda a, b: a @ b,
    adjoint_a=lambda s, b: s @ b.mT,
    adjoint_b=lambda s, a: a.mT @ s,
)
_LINEAR_PRODUCT = Bilinear(
    forward=lambda a, b: a @ b.mT,
    adjoint_a=lambda s, b: s @ b,
    adjoint_b=lambda s, a: s.reshape(-1, s.shape[-1]).mT @ a.reshape(-1, a.shape[-1]),
)

register_ops(LinearAdapter(LINEAR), aten.linear.default)
register_ops(MatmulAdapter("self", "mat2"), aten.mm.default, aten.bmm.default)
register_ops(MatmulAdapter("self", "other"), aten.matmul.default)
register_ops(MatmulAdapter("mat1", "mat2", bias="self"), aten.addmm.default)
register_ops(MatmulAdapter("batch1", "batch2", bias="self"), aten.baddbmm.default)


class ConvAdapter(LayerAdapter):
    """Convolutions (and transposed convolutions) with a constant kernel."""

    facts = Facts(expensive=True)


register_ops(
    ConvAdapter(CONV, "input", _conv_layer(False)),
    aten.conv1d.default,
    aten.conv2d.default,
    aten.conv3d.default,
    aten.conv1d.padding,
    aten.conv2d.padding,
    aten.conv3d.padding,
)
register_ops(
    ConvAdapter(CONV, "input", _conv_layer(True)),
    aten.conv_transpose1d.default,
    aten.conv_transpose2d.input,
    aten.conv_transpose3d.input,
)
register_ops(ConvAdapter(CONV, "input", _conv_layer(None)), aten.convolution.default)
