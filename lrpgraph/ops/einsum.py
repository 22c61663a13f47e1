"""aten.einsum: the rule its equation implies (no op class of its own).

Two relevant operands: a product contracted over an index — the bilinear rules (op class "matmul", or
"attention_values" when the graph finds one operand to be attention probabilities).
One relevant operand with a constant one (a weight, a table): a layer, linear in the relevant operand
(op class "linear": epsilon, gamma, …). One operand: a permutation or broadcast moves relevance
exactly ("reindex"); one that sums over an index is a sum ("sum"). The adjoints are einsums too;
an index only the relevant operand has (summed there alone) is broadcast back. Repeated indices in
one operand (diagonals) have no rule; more than two operands arrive split into two-operand einsums
(`capture/canonical.py`), except in an equation with '...', which has none.
"""

from __future__ import annotations

import string

import torch

from ..errors import MissingRuleError
from .adapter import Adapter, RoleKind
from .attention import ATTENTION_VALUES
from .bilinear import MATMUL, Bilinear
from .layer_rules import LINEAR
from .linear_maps import LinearMap
from .pooling import SUM
from .reindex import REINDEX
from .table import Facts, register_ops

aten = torch.ops.aten


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """(one index string per operand, the output's) with '...' spelled out and an implicit output made explicit."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise MissingRuleError(f"einsum equation {equation!r} names {len(terms)} operands, not {len(ranks)}")
    spare = iter(c for c in string.ascii_uppercase + string.ascii_lowercase if c not in equation)
    widest = max(
        (rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks, strict=True) if "..." in t), default=0
    )
    ellipsis = "".join(next(spare) for _ in range(widest))
    terms = [
        t.replace("...", ellipsis[len(ellipsis) - (rank - len(t.replace("...", ""))) :])
        for t, rank in zip(terms, ranks, strict=True)
    ]
    if arrow:
        output = output.replace("...", ellipsis)
    else:
        counts = {c: inputs.count(c) for c in set("".join(terms))}
        output = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ellipsis))
    if any(len(set(t)) != len(t) for t in terms):
        raise MissingRuleError(f"einsum {equation!r} repeats an index within one operand (a diagonal): no rule")
    return terms, output


def adjoint(
    s: torch.Tensor, output: str, target: str, other: str | None, operand: torch.Tensor | None, shape
) -> torch.Tensor:
    """Aᵀs for operand `target`: s [output] contracted with the other operand; its own indices broadcast back."""
    known = set(output) | set(other or "")
    kept = "".join(c for c in target if c in known)
    spec = f"{output},{other}->{kept}" if other is not None else f"{output}->{kept}"
    result = torch.einsum(spec, s, operand.to(s.dtype)) if other is not None else torch.einsum(spec, s)
    for position, c in enumerate(target):
        if c not in known:
            result = result.unsqueeze(position)
    return result.expand(shape)


class EinsumLayer(LinearMap):
    """y = einsum(eq, x, w) (or einsum(eq, w, x)) for a constant w: linear in x."""

    def __init__(self, x_shape, terms: list[str], output: str, weight: torch.Tensor, x_first: bool):
        super().__init__(x_shape)
        self.terms, self.output, self.weight, self.x_first = terms, output, weight, x_first
        self.x_term, self.w_term = (terms[0], terms[1]) if x_first else (terms[1], terms[0])

    def forward(self, x, weight, bias=None):
        operands = (x, weight.to(x.dtype)) if self.x_first else (weight.to(x.dtype), x)
        y = torch.einsum(f"{self.terms[0]},{self.terms[1]}->{self.output}", *operands)
        return y if bias is None else y + bias

    def adjoint(self, s, weight):
        return adjoint(s, self.output, self.x_term, self.w_term, weight, self.x_shape)


class EinsumSum(LinearMap):
    """y = einsum(eq, x) summing over the indices the output drops."""

    def __init__(self, x_shape, term: str, output: str):
        super().__init__(x_shape)
        self.term, self.output = term, output

    def forward(self, x, weight=None, bias=None):
        return torch.einsum(f"{self.term}->{self.output}", x)

    def adjoint(self, s, weight=None):
        return adjoint(s, self.output, self.term, None, None, self.x_shape)


class EinsumAdapter(Adapter):
    """einsum(equation, tensors): its op class follows from how many of its operands carry relevance."""

    data = "tensors"
    facts = Facts(expensive=True, mixes_positions=True, matmul=True, operands=("tensors",))

    def __init__(self):
        super().__init__(LINEAR)

    def op_class(self, args, relevant, role):
        marks = relevant.get("tensors") or []
        if len(marks) > 2:
            raise MissingRuleError(f"einsum with {len(marks)} operands has no rule; write it as two-operand einsums")
        if len(marks) == 2:
            if not all(marks):
                return LINEAR
            return ATTENTION_VALUES if role is not None and role.kind is RoleKind.ATTENTION else MATMUL
        terms, output = parse(args["equation"], [len(args["tensors"][0].meta["val"].shape)])
        return SUM if set(terms[0]) - set(output) else REINDEX

    def layer_keys(self, args, relevant):
        i = relevant["tensors"].index(True)
        return ("tensors", i), ("tensors", 1 - i), None

    def needs(self, op_class, kernel, args, relevant):
        tensors = args["tensors"]
        if op_class in (MATMUL, ATTENTION_VALUES):
            return {"tensors"}, True
        if op_class is LINEAR:  # the constant operand is the weight; x and out as the kernel says
            return {"tensors"}, "out" in kernel.needs
        return ({"tensors"} if "x" in kernel.needs else set()), "out" in kernel.needs and len(tensors) == 1

    def apply(self, call):
        tensors, marks = call.args["tensors"], call.relevant["tensors"]
        terms, output = parse(call.args["equation"], [t.dim() for t in tensors])
        if call.op_class in (MATMUL, ATTENTION_VALUES):
            a, b = tensors
            product = Bilinear(
                forward=lambda x, y: torch.einsum(f"{terms[0]},{terms[1]}->{output}", x, y),
                adjoint_a=lambda s, y: adjoint(s, output, terms[0], terms[1], y, a.shape),
                adjoint_b=lambda s, x: adjoint(s, output, terms[1], terms[0], x, b.shape),
            )
            if call.op_class is ATTENTION_VALUES:
                ra, rb = call.run(a, b, call.out, product, call.role.index == 0)
            else:
                ra, rb = call.run(a, b, call.out, product)
            return {"tensors": [ra, rb]}
        if call.op_class is LINEAR:
            i = marks.index(True)
            layer = EinsumLayer(tensors[i].shape, terms, output, tensors[1 - i], x_first=i == 0)
            result = [None, None]
            result[i] = call.run(tensors[i], layer, call.out)
            return {"tensors": result}
        (x,) = tensors
        if call.op_class is SUM:
            return {"tensors": [call.run(x, EinsumSum(x.shape, terms[0], output), call.out)]}
        return {"tensors": [call.run(lambda r: adjoint(r, output, terms[0], None, None, x.shape), call.out)]}


register_ops(EinsumAdapter(), aten.einsum.default)
