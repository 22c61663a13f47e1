"""Where relevance stops being finite: an explain's forward and walk run again with every rule's result checked, to
name the first node whose rule turned finite relevance into NaN or infinity, and whether the model's own value there
is finite (then the rule divides by zero or overflows: a stabiliser of 0, say) or not (the model computes NaN
inside). Run only after the relevance reaching the inputs was found not finite: it costs one more forward and walk.
"""

from __future__ import annotations

from typing import Any

import torch

from ..ops.sparse import RowSparse
from ..propagate.plan import Plan, Step
from ..propagate.walker import BatchedWalker, Walker
from .bound_call import BoundCall
from .output import ForwardPass


class _Found(Exception):
    def __init__(self, where: str):
        self.where = where


def _finite(value: Any) -> bool:
    if isinstance(value, RowSparse):
        value = value.values
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value if v is not None)
    return not isinstance(value, torch.Tensor) or bool(torch.isfinite(value).all())


class _CheckingWalker(Walker):
    """A walker that stops at the first rule turning finite relevance into NaN or infinity, saying where."""

    def step(self, step: Step, R: Any) -> list[Any]:
        results = super().step(step, R)
        if _finite(R) and not _finite(results):
            raise _Found(self._where(step))
        return results

    def _where(self, step: Step) -> str:
        try:
            finite = _finite(self.store.get(step.node))
        except Exception:  # a value neither kept nor recomputable under this schedule: nothing to say of it
            finite = None
        model = {
            True: "finite, so the rule divides by zero or overflows there (a stabiliser of 0?)",
            False: "not finite either: the model computes NaN or infinity there",
            None: "not kept",
        }[finite]
        rule = f"{step.op_class.name}:{step.choice.name}"
        return (
            f"it first becomes so at {self.plan.graph.describe(step.node)}, rule '{rule}'; the model's value is {model}"
        )


class _CheckingBatchedWalker(_CheckingWalker, BatchedWalker):
    pass


def first_non_finite(call: BoundCall, plan: Plan, rows: Any, index: int, seed: Any, batched: bool) -> str:
    """Where the relevance of this explain first becomes NaN or infinite (a sentence), or "" if a second walk finds
    no such step (the non-finite values came from the seed or the inputs themselves)."""
    forward = ForwardPass(call, plan, rows, None, False)
    forward.run(index)
    walker = (_CheckingBatchedWalker if batched else _CheckingWalker)(plan, forward.schedule, forward.store)
    try:
        walker.run(seed)
    except _Found as found:
        return found.where
    return ""
