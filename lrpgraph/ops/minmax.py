"""Elementwise maximum and minimum of two tensors (clamps between tensors, xIELU, RWKV): the winner takes all.

Each output element is one of its two operands, so its relevance goes to that operand; where they are
equal it is split evenly. The rule conserves relevance exactly. (Shown whole in the README: "Add a rule".)
"""

from __future__ import annotations

import torch

from .adapter import Adapter, is_tensor
from .gradient import Replay, form
from .registry import declare, rule
from .table import register_ops
from .tensors import unbroadcast

aten = torch.ops.aten

ELEMENTWISE_MAX = declare("elementwise_max", exact=True)  # passes on all it gets when both operands are relevant


@rule(ELEMENTWISE_MAX, "winner", needs=("operands",), default=True)
def winner(R, a, b, relevant):
    """R to the larger operand (a minimum passes −a, −b), split evenly where they are equal."""
    share_a = (a > b).to(R.dtype) + (a == b).to(R.dtype) * 0.5
    to_a = R * share_a
    return [
        unbroadcast(to_a, a.shape) if relevant[0] else None,
        unbroadcast(R - to_a, b.shape) if relevant[1] else None,
    ]


@form(ELEMENTWISE_MAX, "winner")
def winner_form(call: Replay):
    """The gradient of max (or min) goes to the larger operand, half each where they are equal."""
    return call.run()


class ElementwiseMaxAdapter(Adapter):
    def __init__(self, smaller: bool):
        super().__init__(ELEMENTWISE_MAX)
        self.smaller = smaller

    def needs(self, op_class, kernel, args, relevant):  # the activations the walk must keep for it
        return {n for n in ("self", "other") if is_tensor(args.get(n))}, False

    def conserves(self, args, relevant):
        return bool(relevant.get("self")) and bool(relevant.get("other"))

    def apply(self, call):
        a, b = call.args["self"], call.args["other"]
        marks = [bool(call.relevant.get("self")), bool(call.relevant.get("other"))]
        result = call.run(-a if self.smaller else a, -b if self.smaller else b, marks)
        return dict(zip(("self", "other"), result, strict=True))


register_ops(ElementwiseMaxAdapter(smaller=False), aten.maximum.default, aten.max.other)
register_ops(ElementwiseMaxAdapter(smaller=True), aten.minimum.default, aten.min.other)
