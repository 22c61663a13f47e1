"""Linear recurrences h_t = a_t·h_{t−1} + b_t traced as one op (`lrpgraph::linear_scan`, capture/scans.py).

Op class "scan", rule `unrolled`: the relevance the recurrence's own ops would give it written out step by step —
at each step's sum the epsilon split of h_t between a_t·h_{t−1} and b_t (the `norm` rule of sums, `stabilizer`),
and the product a_t·h_{t−1} split uniformly between its factors where a carries relevance (AttnLRP Prop. 3.2) or
all to h_{t−1} where a is a constant (MambaLRP holds the selection Ā constant). Walking it backwards, the state's
relevance ratio s_t = (R_t + carry_t) / stab(h_t) gives b_t its share b_t·s_t and carries a_t·h_{t−1}·s_t
(half of it, with the other half to a_t) to the step before. Rule `constant-decay` holds a constant always, as
CP-LRP holds gates: the recurrence's own ops make Ā·h a gate there, Ā = exp(ΔA) being an activation's output.
"""

from __future__ import annotations

import torch

from ..capture.scans import SCAN_OP
from .adapter import Adapter
from .gradient import Replay, form, rescaled, share_of, split, stabilized
from .registry import declare, rule
from .table import register_ops
from .tensors import stabilize

SCAN = declare("scan", absorbs="rules")


@rule(SCAN, "unrolled", needs=("x", "out"), default=True)
def scan_unrolled(R, a, b, out, dim: int, decay_relevant: bool, *, stabilizer: float = 1e-6):
    """R_b[t] = b_t·s_t, R_a[t] = ½·a_t·h_{t−1}·s_t (a relevant), s_t = (R_t + carry_t)/stab(h_t) backwards."""
    return _walk(R, a, b, out, dim, decay_relevant, stabilizer)


@rule(SCAN, "constant-decay", needs=("x", "out"))
def scan_constant_decay(R, a, b, out, dim: int, decay_relevant: bool, *, stabilizer: float = 1e-6):
    """As `unrolled` with a held constant, as CP-LRP holds a gate (Ā = exp(ΔA) is an activation's output)."""
    return _walk(R, a, b, out, dim, False, stabilizer)


def _walk(R, a, b, out, dim: int, split_decay: bool, stabilizer: float):
    a, b, h = (t.to(R.dtype) for t in (a, b, out))
    steps = R.shape[dim]
    to_b, to_a = [None] * steps, [None] * steps
    carry = torch.zeros_like(R.select(dim, 0))
    for t in reversed(range(steps)):
        s = (R.select(dim, t) + carry) / stabilize(h.select(dim, t), stabilizer)
        to_b[t] = b.select(dim, t) * s
        passed = a.select(dim, t) * h.select(dim, t - 1) * s if t > 0 else torch.zeros_like(s)
        carry = passed / 2 if split_decay else passed
        to_a[t] = carry
    return (torch.stack(to_a, dim) if split_decay else None), torch.stack(to_b, dim)


@form(SCAN, "unrolled")
def scan_form(call: Replay, *, stabilizer: float = 1e-6):
    """The recurrence replayed step by step: each product a_t·h_{t−1} with half its gradient to each factor (or a_t
    detached), each sum's gradient scaled by h_t / stab(h_t)."""
    return _replayed(call, call.is_relevant("a"), stabilizer)


@form(SCAN, "constant-decay")
def scan_constant_decay_form(call: Replay, *, stabilizer: float = 1e-6):
    """As `unrolled`'s, a_t detached."""
    return _replayed(call, False, stabilizer)


def _replayed(call: Replay, split_decay: bool, stabilizer: float):
    a, b, dim = call.get("a"), call.get("b"), call.args["dim"]
    if not split_decay:
        a = a.detach()
    h, states = torch.zeros_like(b.select(dim, 0)), []
    for t in range(b.shape[dim]):
        product = a.select(dim, t) * h
        if split_decay:
            product = split(product, 0.5)
        total = product + b.select(dim, t)
        h = rescaled(total, share_of(total, stabilized(total.detach(), stabilizer)))
        states.append(h)
    return torch.stack(states, dim)


class ScanAdapter(Adapter):
    """linear_scan(a, b, dim): relevance to b, and to a where it carries relevance."""

    data = "b"

    def __init__(self):
        super().__init__(SCAN)

    def needs(self, op_class, kernel, args, relevant):
        return {"a", "b"}, True

    def apply(self, call):
        to_a, to_b = call.run(call.args["a"], call.args["b"], call.out, call.args["dim"], bool(call.relevant.get("a")))
        return {"a": to_a, "b": to_b}


register_ops(
    ScanAdapter(),
    SCAN_OP,
    operands=("a", "b"),
    recurrence=True,
    mixes_positions=True,
    expensive=True,
)
