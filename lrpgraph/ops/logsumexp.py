"""Log-sum-exp over a dimension, a soft maximum (attention sinks scale by sigmoid(logsumexp(scores) − sink)).

Op class "logsumexp", rule `soft_max`: each term x_i receives the share of the output's relevance that its
exponential has of the sum, R_i = softmax(x)_i · R — the max rule (all to the largest term) made soft; it
conserves relevance. No paper defines a rule for it; this is the one whose limit for one dominant term is the
max rule and which never creates relevance.
"""

from __future__ import annotations

import torch

from .adapter import Adapter
from .gradient import Replay, delta, form, ratio
from .registry import declare, rule
from .table import register_ops

aten = torch.ops.aten

LOGSUMEXP = declare("logsumexp", exact=True)


def _kept(y: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    """y with the reduced dims put back (size 1), so that it broadcasts against the input."""
    if keepdim:
        return y
    for d in sorted(d % (y.dim() + len(dims)) for d in dims):
        y = y.unsqueeze(d)
    return y


@rule(LOGSUMEXP, "soft_max", needs=("x", "out"), default=True)
def soft_max(R, x, out, dims: list[int], keepdim: bool):
    """R_i = softmax(x)_i · R over the reduced dims."""
    y = _kept(out, dims, keepdim)
    share = torch.exp(x.to(R.dtype) - y.to(R.dtype))
    return share * _kept(R, dims, keepdim)


@form(LOGSUMEXP, "soft_max")
def soft_max_form(call: Replay):
    """out's value; x_i's gradient is softmax(x)_i · out / x_i, so that x ⊙ gradient is the rule's share (zero
    where x_i is 0: no gradient times it can carry relevance there)."""
    x, out = call.get("self"), call.out
    dims, keepdim = _dims(call.args, x), bool(call.args.get("keepdim", False))
    y = _kept(out.detach(), dims, keepdim)
    share = torch.exp(x.detach() - y) * y
    return out.detach() + (delta(x) * ratio(share, x.detach())).sum(dims, keepdim=keepdim)


def _dims(args: dict, x: torch.Tensor) -> list[int]:
    dims = args.get("dim", ())
    dims = [dims] if isinstance(dims, int) else list(dims)
    return dims or list(range(x.dim()))


class LogSumExpAdapter(Adapter):
    def __init__(self):
        super().__init__(LOGSUMEXP)

    def needs(self, op_class, kernel, args, relevant):
        return {"self"}, True

    def apply(self, call):
        x = call.args["self"]
        dims, keepdim = _dims(call.args, x), bool(call.args.get("keepdim", False))
        return {"self": call.run(x, call.out, dims, keepdim)}


# also the log-normaliser of a softmax written out, exp(x − logsumexp(x)), which capture rewrites into the softmax
register_ops(LogSumExpAdapter(), aten.logsumexp.default, mixes_positions=True)
