"""A traced graph and everything derived from it once, for every call it serves: analysis, plans, shapes, forwards."""

from __future__ import annotations

import threading
from typing import Any

from torch import fx

from ..capture.fold_batchnorm import fold_batchnorm, foldable
from ..capture.graph import Graph
from ..capture.shapes import ShapeFunction, Shapes
from ..flow.analysis import Analysis, analyse
from ..presets.ruleset import RuleSet
from ..propagate.forward import Forward
from ..propagate.plan import Plan, build_plan
from .export_lock import EXPORT_LOCK


class TracedModel:
    """One traced graph; its analysis, plans (per output, rule set, fallback, sources), shapes and forwards."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._lock = threading.RLock()  # lazy builds: the analysis rewrites the graph once
        self._analysis: Analysis | None = None
        self._shapes: ShapeFunction | None = None
        self._plans: dict[tuple, Plan] = {}
        self._forwards: dict[tuple, Forward] = {}
        self._folded: TracedModel | None = None

    def for_rules(self, ruleset: RuleSet) -> TracedModel:
        """This trace as the rule set wants it: with eval batch norms merged into the layers before them
        (a copy of the graph, made once) when it asks to fold them and there are any."""
        if not ruleset.fold_batchnorm or not foldable(self.graph.module.graph):
            return self
        with self._lock:
            if self._folded is None:
                folded = self.graph.copy()
                with EXPORT_LOCK:
                    fold_batchnorm(folded.module)
                self._folded = TracedModel(folded)
            return self._folded

    @property
    def analysis(self) -> Analysis:
        with self._lock:
            if self._analysis is None:
                with EXPORT_LOCK:  # symbolic sizes are compared: not while another thread exports
                    self._analysis = analyse(self.graph)
            return self._analysis

    def shapes(self, values: list[Any]) -> Shapes:
        """Every node's concrete shape for a call with these placeholder values (after the analysis' rewrite)."""
        with self._lock:
            if self._shapes is None:
                self.analysis  # noqa: B018 - nodes the analysis inserts need shapes too
                with EXPORT_LOCK:
                    self._shapes = ShapeFunction(self.graph.module.graph)
        return self._shapes(values)

    def plan(
        self, output: fx.Node, ruleset: RuleSet, fallback: str | None, sources: frozenset[fx.Node] = frozenset()
    ) -> Plan:
        """The plan for this output and rule set (rebuilt when the rule set changes)."""
        key = (output, ruleset.fingerprint(), fallback, sources)
        with self._lock:
            if key not in self._plans:
                analysis = self.analysis
                with EXPORT_LOCK:
                    self._plans[key] = build_plan(self.graph, analysis, output, ruleset, fallback, sources)
            return self._plans[key]

    def forward(self, keep: frozenset[fx.Node], stop: tuple[fx.Node, fx.Node] | None = None) -> Forward:
        """The forward that also returns the activations in `keep` (and stops before output `stop[0]`, returning
        its input `stop[1]` in its place)."""
        with self._lock:
            if (keep, stop) not in self._forwards:
                self._forwards[keep, stop] = Forward(self.graph, keep, stop)
            return self._forwards[keep, stop]
