"""The op table: one entry per ATen overload holding everything lrpgraph knows about the op.

An entry (`OpSpec`) holds the op's adapter — how its arguments meet the rule kernels of its op
classes —, the adapter of the op where it computes integers from ids (offsets, hashes), and its
`Facts`: what the graph passes, the plan and the memory schedule read about it (does it move
values, is it a cast, a product, a matrix product, a table lookup, a statistic, …). Passes ask the
table (`facts(node.target)`) and keep no op lists of their own. Entries are registered next to the
op's kernels, and `check()` verifies every entry against the op's schema once all are registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ARITHMETIC = ("sum", "difference", "product", "quotient")
STATISTICS = ("moment", "mean", "square")


@dataclass(frozen=True)
class Facts:
    """What passes read about an op; every field defaults to "no"."""

    moves_values: bool = False  # only moves, copies or selects values (views, casts, getitem): ids flow through it
    copy: bool = False  # its output holds its input's values (casts, clones): looked through for a value's source
    alias: bool = False  # returns its input itself (alias, detach): removed from the graph before the analysis
    cast: bool = False  # converts dtype or device: removed where it changes neither
    arithmetic: str | None = None  # elementwise "sum", "difference", "product" or "quotient" of `operands`
    operands: tuple[str, ...] = ()  # the two operand arguments of arithmetic or of a matrix product, in order,
    # or the one list argument holding them (einsum's tensors)
    matmul: bool = False  # a matrix product of `operands` (attention-weighted values when one is probabilities)
    recurrence: bool = False  # h_t = a_t·h_{t−1} + b_t of `operands` (a, b): a multiplies the state (a scan's Ā)
    lookup: str | None = None  # reads rows of a table at the ids in this argument: relevant ids receive relevance
    gather: str | None = None  # reads values at the indices in this argument (a positional table may be read so)
    statistic: str | None = None  # "moment" (var, std, norm), "mean" (sum, mean) or "square" (x², |x|)
    power: str | None = None  # the exponent argument of a power: a square where it is 2
    scale_chain: bool = False  # one tensor operand, the rest constants: turns a statistic into a scale (√, 1/x, +ε)
    pointwise: bool = False  # an elementwise function of its first argument
    constant_at_zero: bool = False  # a pointwise f with f(0) ≠ 0 (exp, sigmoid, cos): at x = 0 it outputs a constant
    trig: str | None = None  # "cos" or "sin": where rotary factors come from
    gate_source: str | None = None  # "softmax" or "activation": a product with its output is a gate
    mixes_positions: bool = False  # mixes positions (attention, softmax, matrix products, normalisation)
    expensive: bool = False  # a matrix product or convolution: the schedule keeps its output rather than recompute it
    random: bool = False  # draws from a random generator: never recomputed, which would draw other values than the
    # forward did (ops without a rule: torch's nondeterministic_seeded tag; SDPA carries the tag for its dropout, which
    # its rule refuses)
    shape_only: tuple[str, ...] = ()  # arguments whose shape alone the op reads (expand_as's `other`)
    picks: str | None = None  # the argument naming the one index it takes along `dim` (select): an unrolled loop's step
    spans: bool = False  # takes `start`:`end`:`step` along `dim` (slice): all of it where the span covers the dim
    fast_forward: Callable | None = None  # the op with equal values, faster: what explain's forward calls instead

    def __post_init__(self):
        if self.arithmetic not in (None, *ARITHMETIC):
            raise ValueError(f"arithmetic must be one of {ARITHMETIC}, not {self.arithmetic!r}")
        if self.statistic not in (None, *STATISTICS):
            raise ValueError(f"statistic must be one of {STATISTICS}, not {self.statistic!r}")
        if self.trig not in (None, "cos", "sin") or self.gate_source not in (None, "softmax", "activation"):
            raise ValueError(f"trig must be 'cos' or 'sin', gate_source 'softmax' or 'activation': {self}")
        if (self.arithmetic or self.matmul) and len(self.operands) not in (1, 2):
            raise ValueError("arithmetic and matrix products name their two operands, or the list holding them")


NO_FACTS = Facts()


@dataclass(frozen=True)
class OpSpec:
    """One op's entry: its adapter (None: facts only, no rule), its adapter on integers, its facts."""

    target: Any
    adapter: Any = None
    integer: Any = None
    facts: Facts = NO_FACTS


TABLE: dict[Any, OpSpec] = {}


def register_ops(adapter: Any, *targets: Any, integer: bool = False, **facts: Any) -> None:
    """Enter each ATen overload (or Python callable such as operator.getitem) with its adapter and facts.

    The facts are the adapter's own (`adapter.facts`) with `facts` on top. A target may also be a qualified
    name ("transformers.grouped_mm_fallback.default") for custom ops that exist only once a third-party
    library has registered them. `integer`: the adapter of the op where it computes integers from relevant
    ids (its facts are the op's float entry's).
    """
    for target in targets:
        entry = TABLE.get(target) or OpSpec(target)
        if integer:
            if entry.integer is not None:
                raise RuntimeError(f"{target} has an integer adapter already")
            TABLE[target] = dataclasses.replace(entry, integer=adapter)
            continue
        if entry.adapter is not None:
            raise RuntimeError(f"{target} is registered twice")
        merged = dataclasses.replace(getattr(adapter, "facts", NO_FACTS), **facts)
        TABLE[target] = dataclasses.replace(entry, adapter=adapter, facts=_merged(entry.facts, merged))


def describe(*targets: Any, **facts: Any) -> None:
    """Enter facts of ops that have no rule of their own (statistics a pass recognises and cuts)."""
    for target in targets:
        entry = TABLE.get(target) or OpSpec(target)
        TABLE[target] = dataclasses.replace(entry, facts=_merged(entry.facts, Facts(**facts)))


def _merged(old: Facts, new: Facts) -> Facts:
    changes = {f.name: getattr(new, f.name) for f in dataclasses.fields(Facts) if getattr(new, f.name) != f.default}
    return dataclasses.replace(old, **changes)


def spec(target: Any) -> OpSpec | None:
    """The op's entry, by the op itself or by its qualified name; None if the table does not know it."""
    entry = TABLE.get(target)
    if entry is None and not isinstance(target, str):
        entry = TABLE.get(str(target))
    return entry


def facts(target: Any) -> Facts:
    """What the table says about an op (no facts for an op it does not know); an op without a rule that torch tags
    as drawing random numbers is random."""
    entry = spec(target)
    if entry is not None and entry.adapter is not None:
        return entry.facts
    found = NO_FACTS if entry is None else entry.facts
    if torch.Tag.nondeterministic_seeded in getattr(target, "tags", ()):
        return dataclasses.replace(found, random=True)
    return found


def lookup(target: Any, integer: bool = False) -> Any:
    """The adapter of an op (its integer adapter for an integer-valued node, if it has one); None without a rule."""
    entry = spec(target)
    if entry is None:
        return None
    return entry.integer if integer and entry.integer is not None else entry.adapter


def check() -> None:
    """Every argument an entry names exists in its op's schema: a misspelt fact is an error at import, not a
    silently unmatched argument (a lookup whose ids never receive relevance)."""
    problems = []
    for target, entry in TABLE.items():
        schema = getattr(target, "_schema", None)
        if schema is None:  # operator.getitem, custom ops named by string
            continue
        names = {a.name for a in schema.arguments}
        f = entry.facts
        named = [*f.operands, *f.shape_only, f.lookup, f.gather, f.power, f.picks]
        unknown = sorted({n for n in named if n is not None} - names)
        if unknown:
            problems.append(f"{target}: {', '.join(unknown)} not among its arguments ({', '.join(sorted(names))})")
        if entry.adapter is None and entry.integer is None and f == NO_FACTS:
            problems.append(f"{target}: an entry with no adapter and no facts")
    if problems:
        raise RuntimeError("op table entries name arguments their ops do not have:\n  " + "\n  ".join(problems))
