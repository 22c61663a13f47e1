"""A model's traced graph and everything derived from it once: analyses, plans, forward modules.

`traced(model, args, kwargs)` returns the TracedModel for a call, tracing only when no cached one
fits; the caches hang here, per model, never on the model itself.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import fx

from ..flow.analysis import Analysis, analyse
from ..presets.ruleset import RuleSet
from ..propagate.forward import Forward
from ..propagate.plan import Plan, build_plan
from ..trace.call import prepare_call
from ..trace.export import export
from ..trace.fingerprint import signature
from ..trace.graph import Graph


class TracedModel:
    """One traced graph; its analysis, plans (per output, rule set, fallback, sources) and forwards (per keep set)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._analysis: Analysis | None = None
        self._plans: dict[tuple, Plan] = {}
        self._forwards: dict[frozenset[fx.Node], Forward] = {}

    @property
    def analysis(self) -> Analysis:
        if self._analysis is None:
            self._analysis = analyse(self.graph)
        return self._analysis

    def plan(
        self, output: fx.Node, ruleset: RuleSet, fallback: str | None, sources: frozenset[fx.Node] = frozenset()
    ) -> Plan:
        """The plan for this output and rule set (rebuilt when the rule set changes)."""
        key = (output, ruleset.fingerprint(), fallback, sources)
        if key not in self._plans:
            self._plans[key] = build_plan(self.graph, self.analysis, output, ruleset, fallback, sources)
        return self._plans[key]

    def forward(self, keep: frozenset[fx.Node]) -> Forward:
        """The forward that also returns the activations in `keep`."""
        if keep not in self._forwards:
            self._forwards[keep] = Forward(self.graph, keep)
        return self._forwards[keep]


_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, TracedModel]] = weakref.WeakKeyDictionary()


def traced(model: torch.nn.Module, args: tuple, kwargs: dict) -> TracedModel:
    """The TracedModel of `model(*args, **kwargs)`, traced on first use of its signature."""
    key = signature(model, args, kwargs)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = TracedModel(export(model, args, kwargs))
    return per_model[key]


def trace(model: torch.nn.Module, inputs: Any) -> Graph:
    """Export `model` called on `inputs` into a Graph (cached): what `explain` propagates relevance over."""
    args, kwargs = prepare_call(model, inputs)
    return traced(model, args, kwargs).graph


def clear_cache(model: torch.nn.Module | None = None) -> None:
    """Forget traced graphs (of one model, or all)."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)
