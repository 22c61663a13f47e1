"""What the passes found on one traced graph: scales, pointwise regions, roles — and relevance flows.

Computed once per graph (and cached on it); the relevance flow is cached per chosen output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from .flow import Flow, relevance_flow
from .graph import Graph
from .passes.norm_scale import normalisation_scales
from .passes.pointwise import pointwise_regions
from .passes.positional import PositionalSource, mixing_nodes, positional_sources
from .passes.roles import product_roles


@dataclass
class Analysis:
    graph: Graph
    cuts: set[fx.Node]
    redirects: dict[fx.Node, fx.Node]
    roles: dict[fx.Node, str] = field(default_factory=dict)
    positional: list[PositionalSource] = field(default_factory=list)
    _flows: dict[tuple, Flow] = field(default_factory=dict, repr=False)

    def flow(self, output: fx.Node, sources: frozenset[fx.Node] = frozenset()) -> Flow:
        """Relevance flow to `output`, with `sources` (positional encodings) as extra relevance sources."""
        key = (output, sources)
        if key not in self._flows:
            self._flows[key] = relevance_flow(self.graph, output, self.cuts, self.redirects, sources)
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
    """Run the passes over a graph (once; the result is kept on the graph)."""
    cached = getattr(graph, "_analysis", None)
    if cached is not None:
        return cached
    fx_graph = graph.module.graph
    anywhere = _any_output(graph)
    relevant = relevance_flow(graph, anywhere).relevant
    positional = positional_sources(graph, relevant, mixing_nodes(graph, relevant))
    if positional:  # the pass inserted a node per positional operand: they carry relevance too
        relevant = relevance_flow(graph, anywhere).relevant
    cuts = normalisation_scales(fx_graph, relevant)
    relevant = relevance_flow(graph, anywhere, cuts).relevant
    redirects = pointwise_regions(fx_graph, relevant)
    roles = product_roles(fx_graph, relevant, redirects)
    analysis = Analysis(graph, cuts, redirects, roles, positional)
    graph._analysis = analysis
    return analysis


def _any_output(graph: Graph) -> fx.Node:
    return graph.module.graph.output_node()
