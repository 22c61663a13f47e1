"""What the passes find on one traced graph: scales, pointwise regions, roles (of products and residual sums),
positional sources, the selection of state-space scans, flows.

`analyse` runs once per graph: it first removes copies that change nothing, reads the steps of unrolled loops
through one unbind per tensor (`selects.py`) and exposes positional operands (an explicit broadcast node per
candidate, so the relevance it receives is per sample and per use), then finds the facts the rule choice reads.
Relevance flows are derived per explained output and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from ..capture.graph import Graph
from ..ops.adapter import Role
from .noop_copies import remove_noop_copies
from .norm_scale import held_statistics, normalisation_scales
from .pointwise import pointwise_regions
from .positional import PositionalSource, expose_positional_operands, mixing_nodes
from .relevance import Flow, relevance_flow
from .residuals import residual_roles
from .roles import product_roles
from .selection import selection_operands
from .selects import selects_as_unbind


@dataclass
class Analysis:
    graph: Graph
    cuts: set[fx.Node]
    redirects: dict[fx.Node, fx.Node]
    roles: dict[fx.Node, Role] = field(default_factory=dict)
    positional: list[PositionalSource] = field(default_factory=list)
    selection: frozenset[fx.Node] = frozenset()
    _flows: dict[tuple, Flow] = field(default_factory=dict, repr=False)

    def flow(self, output: fx.Node, sources: frozenset[fx.Node] = frozenset(), hold_selection: bool = False) -> Flow:
        """Relevance flow to `output`, with `sources` (positional encodings) as extra relevance sources; with
        `hold_selection` the selection of state-space scans is a constant too (MambaLRP)."""
        key = (output, sources, hold_selection)
        if key not in self._flows:
            cuts = self.cuts | self.selection if hold_selection else self.cuts
            self._flows[key] = relevance_flow(self.graph, output, cuts, self.redirects, sources)
        return self._flows[key]

    def explainable_inputs(self) -> list[fx.Node]:
        """User inputs relevance can reach from some floating-point output (ids via embeddings, not masks)."""
        found: set[fx.Node] = set()
        for node in self.graph.outputs:
            val = getattr(node, "meta", {}).get("val")
            if isinstance(node, fx.Node) and isinstance(val, torch.Tensor) and val.is_floating_point():
                found.update(n for n in self.flow(node).live if n.op == "placeholder")
        return [n for n in self.graph.module.graph.find_nodes(op="placeholder") if n in found]


def analyse(graph: Graph) -> Analysis:
    """Run the passes over a graph (once per graph: the caller keeps the result)."""
    fx_graph = graph.module.graph
    if remove_noop_copies(graph.module):
        graph.module.recompile()
    selects_as_unbind(graph.module)
    anywhere = fx_graph.output_node()
    relevant = relevance_flow(graph, anywhere).relevant  # before normalisation scales are cut
    positional = expose_positional_operands(graph, relevant, mixing_nodes(graph, relevant))
    cuts = normalisation_scales(fx_graph, relevant) | held_statistics(fx_graph, relevant)
    relevant = relevance_flow(graph, anywhere, cuts).relevant
    redirects = pointwise_regions(fx_graph, relevant)
    roles = {**product_roles(fx_graph, relevant, redirects), **residual_roles(fx_graph, relevant, redirects)}
    selection = frozenset(selection_operands(fx_graph, relevant))
    return Analysis(graph, cuts, redirects, roles, positional, selection)
