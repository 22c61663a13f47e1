"""Writes into a tensor: index_add, scatter_add, index_put, scatter, scatter_reduce — mixtures of experts combine
with them, byte-level models pool patches with them.

Accumulating writes (out = self + scattered src) split each output's relevance in proportion to what
`self` and every source element put there (the epsilon rule of a sum; a mean's terms are each divided by their
count). Overwriting writes move relevance: the written positions' relevance goes to the source, the rest stays
with `self`. Max and min reductions give each output's relevance to the elements equal to it, split among ties.
"""

from __future__ import annotations

import torch

from ..errors import MissingRuleError
from .adapter import Adapter, is_tensor
from .gradient import Replay, form, rescaled, share_of, stabilized
from .registry import declare, rule
from .table import register_ops
from .tensors import stabilize, unbroadcast

aten = torch.ops.aten

SCATTER = declare("scatter")
SCATTER_EXTREME = declare("scatter_extreme")


@rule(SCATTER, "norm", needs=("operands", "out"), default=True)
def scatter_norm(R, self_value, source, out, gather, accumulate: bool, *, stabilizer: float = 1e-6):
    """(R_self, R_source): proportional shares where writes add up, relevance moved where they overwrite.

    `gather(t)` reads, for every source element, the entry of an output-shaped t it was written to.
    """
    if accumulate:
        s = R / stabilize(out.to(R.dtype), stabilizer)
        r_self = self_value * s if isinstance(self_value, torch.Tensor) and self_value.device.type != "meta" else None
        return r_self, source * gather(s)
    return None, gather(R)


@form(SCATTER, "norm")
def scatter_form(call: Replay, *, stabilizer: float = 1e-6):
    """Writes that add up: ρ·y/stab(y) to `self` and to what was written; writes that overwrite: the gradient."""
    if call.adapter.accumulates(call.args):
        return rescaled(call.run(), share_of(call.out, stabilized(call.out.detach(), stabilizer)))
    return call.run()


@rule(SCATTER_EXTREME, "winner", needs=("operands", "out"), default=True)
def scatter_winner(R, self_value, source, out, gather, scatter_sum, self_counts):
    """(R_self, R_source) of a scatter max/min: each output's relevance to the elements equal to it, split among
    ties. `scatter_sum(t)` adds source-shaped t up at the outputs; `self_counts`: where `self` is one of the
    reduced values (include_self, or nothing written there)."""
    source_wins = (source == gather(out)).to(R.dtype)
    self_wins = ((self_value == out) & self_counts).to(R.dtype)
    share = R / (scatter_sum(source_wins) + self_wins).clamp(min=1)
    return self_wins * share, source_wins * gather(share)


@form(SCATTER_EXTREME, "winner")
def scatter_winner_form(call: Replay):
    """torch's gradient of scatter max/min: split evenly among the elements equal to each output."""
    return call.run()


class ScatterAdapter(Adapter):
    """index_add / scatter_add / index_put / scatter: `self` receives `source` at index positions."""

    def __init__(self, source: str, accumulate: bool | None, make_gather, make_clear):
        super().__init__(SCATTER)
        self.source, self.accumulate = source, accumulate
        self.make_gather, self.make_clear = make_gather, make_clear
        self.always = ("index", "indices")

    def needs(self, op_class, kernel, args, relevant):
        names = {n for n in ("self", self.source, "index", "indices") if _holds_tensor(args.get(n))}
        return names, True

    def accumulates(self, args) -> bool:
        """Whether the writes add up (index_add, scatter_add, index_put with accumulate) or overwrite."""
        return bool(args.get("accumulate", False)) if self.accumulate is None else self.accumulate

    def apply(self, call):
        a = call.args
        accumulate = self.accumulates(a)
        gather = self.make_gather(a)
        source = a.get(self.source)
        alpha = a.get("alpha", 1)
        if accumulate:
            source_term = source if alpha == 1 else source * alpha
            r_self, r_source = call.run(a["self"], source_term, call.out, gather, True)
        else:
            _, r_source = call.run(a["self"], source, call.out, gather, False)
            r_self = self.make_clear(a, call.R)
        result = {"self": r_self}
        if is_tensor(source):
            result[self.source] = unbroadcast(r_source, source.shape)
        return result


class ScatterReduceAdapter(Adapter):
    """scatter_reduce: sum and mean are writes that add up (a mean's terms divided by their count), amax and amin
    give relevance to the winners; `include_self=False` leaves `self` out wherever something is written."""

    always = ("self", "src", "index")

    def op_class(self, args, relevant, role):
        reduce = args["reduce"]
        if reduce in ("sum", "mean"):
            return SCATTER
        if reduce in ("amax", "amin"):
            return SCATTER_EXTREME
        raise MissingRuleError(f"scatter_reduce with reduce={reduce!r} has no rule (sum, mean, amax and amin have)")

    def accumulates(self, args) -> bool:
        return args["reduce"] in ("sum", "mean")

    def needs(self, op_class, kernel, args, relevant):
        return set(self.always), True

    def apply(self, call):
        a = call.args
        dim, index, reduce, source = a["dim"], a["index"], a["reduce"], a["src"]
        include_self = a.get("include_self", True)
        written = torch.zeros_like(a["self"], dtype=call.R.dtype).scatter_add_(
            dim, index, torch.ones_like(source, dtype=call.R.dtype)
        )
        self_counts = written == 0 if not include_self else torch.ones_like(written, dtype=torch.bool)
        gather = _scatter_gather(a)
        if reduce in ("amax", "amin"):

            def scatter_sum(t):
                return torch.zeros_like(written).scatter_add_(dim, index, t)

            r_self, r_source = call.run(a["self"], source, call.out, gather, scatter_sum, self_counts)
        else:
            count = (written + include_self).clamp(min=1) if reduce == "mean" else torch.ones_like(written)
            self_term = torch.where(self_counts, a["self"] / count, 0.0)
            r_self, r_source = call.run(self_term, source / gather(count), call.out, gather, True)
        return {"self": r_self, "src": r_source}


def _holds_tensor(value) -> bool:
    """A tensor argument, or a list of them (index_put's `indices`: the write positions are read, not shapes)."""
    return is_tensor(value) or (isinstance(value, (list, tuple)) and any(is_tensor(v) for v in value))


def _index_add_gather(a):
    return lambda t: t.index_select(a["dim"], a["index"])


def _scatter_gather(a):
    return lambda t: t.gather(a["dim"], a["index"])


def _index_put_gather(a):
    return lambda t: aten.index(t, a["indices"])


def _scatter_clear(a, R):
    return R.scatter(a["dim"], a["index"], 0.0)


def _index_put_clear(a, R):
    return aten.index_put(R, a["indices"], R.new_zeros(()), False)


register_ops(ScatterAdapter("source", True, _index_add_gather, None), aten.index_add.default)
register_ops(ScatterAdapter("src", True, _scatter_gather, None), aten.scatter_add.default)
register_ops(ScatterAdapter("src", False, _scatter_gather, _scatter_clear), aten.scatter.src, aten.scatter.value)
register_ops(ScatterReduceAdapter(SCATTER), aten.scatter_reduce.two)
register_ops(  # _unsafe_index_put: without bounds checks, what torch's decompositions (col2im) write
    ScatterAdapter("values", None, _index_put_gather, _index_put_clear),
    aten.index_put.default,
    aten._unsafe_index_put.default,
)
