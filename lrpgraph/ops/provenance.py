"""Ids turned into other ids — offsets per column, hashes, bucketing — before an embedding looks them up.

Op class "provenance": the result's relevance goes back to the relevant integer operand(s) element by
element (summed where it was broadcast, split evenly between two relevant operands), so the relevance of
a hashed or offset lookup lands on the input position it came from. Only where the op's output is an
integer tensor derived from relevant ids; the same ops on floats keep their own rules.
"""

from __future__ import annotations

import torch

from .adapter import Adapter, is_tensor
from .gradient import Replay, form
from .registry import declare, rule
from .table import register_ops
from .tensors import unbroadcast

aten = torch.ops.aten

PROVENANCE = declare("provenance", exact=True)


@rule(PROVENANCE, "follow", default=True)
def follow(R, shapes, relevant):
    """R to each relevant operand (its shape; an even share each when several are relevant)."""
    share = R / max(1, sum(relevant))
    return [unbroadcast(share, shape) if mark else None for shape, mark in zip(shapes, relevant, strict=True)]


@form(PROVENANCE, "follow")
def follow_form(call: Replay):
    """The shadow of the result: the relevant operands' shadows, broadcast, an even share each."""
    shadows = [call.get(key) for key in call.relevant_keys()]
    shape = torch.Size(call.out.shape)
    return sum(s.expand(shape) for s in shadows) / max(1, len(shadows))


class IdArithmeticAdapter(Adapter):
    """Elementwise integer arithmetic of ids with constants (or with other ids)."""

    def __init__(self):
        super().__init__(PROVENANCE)

    def needs(self, op_class, kernel, args, relevant):
        return set(), False

    def apply(self, call):
        names = [n for n in ("self", "other") if is_tensor(call.args.get(n))]
        shapes = [call.args[n].shape for n in names]
        result = call.run(shapes, [bool(call.relevant.get(n)) for n in names])
        return dict(zip(names, result, strict=True))


register_ops(
    IdArithmeticAdapter(),
    aten.add.Tensor,
    aten.add.Scalar,
    aten.sub.Tensor,
    aten.sub.Scalar,
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.remainder.Tensor,
    aten.remainder.Scalar,
    aten.floor_divide.default,
    aten.floor_divide.Scalar,
    aten.div.Tensor_mode,
    aten.bitwise_and.Tensor,
    aten.bitwise_and.Scalar,
    aten.bitwise_or.Tensor,
    aten.bitwise_or.Scalar,
    aten.bitwise_xor.Tensor,
    aten.bitwise_xor.Scalar,
    aten.__lshift__.Scalar,
    aten.__rshift__.Scalar,
    integer=True,
)
# ids overwritten by a constant where a mask says (Gemma 3 clears its image tokens before the lookup): each
# position's relevance goes back to the id that was there
register_ops(IdArithmeticAdapter(), aten.index_put.default, aten.masked_fill.Scalar, integer=True)
