"""The forward pass: the traced graph run as generated code, without autograd, returning what the plan keeps.

For each set of activations to keep, a copy of the graph whose output also returns those nodes is
compiled once (torch.fx code generation, which frees every other value after its last use). This
is the fx Interpreter's job without its per-node Python overhead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ..capture.graph import Graph
from ..errors import InputError, first_line
from ..ops.table import facts
from .store import ActivationStore


class Forward:
    """The graph as a GraphModule returning (graph outputs, kept activations), for one keep set.

    stop: an output node computed by the caller instead (a deferred head, `head.py`): the forward returns
    its input in its place and never runs it.
    """

    def __init__(self, graph: Graph, keep: frozenset[fx.Node], stop: tuple[fx.Node, fx.Node] | None = None):
        order = {n: i for i, n in enumerate(graph.module.graph.nodes)}
        self.kept = sorted(keep - {stop[0]} if stop else keep, key=order.__getitem__)
        new = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        outputs = new.graph_copy(graph.module.graph, mapping)
        if stop is not None:
            node, source = mapping[stop[0]], mapping[stop[1]]
            outputs = fx.node.map_arg(outputs, lambda n: source if n is node else n)
            new.erase_node(node)
        new.output((outputs, tuple(mapping[n] for n in self.kept)))
        for node in new.nodes:
            faster = facts(node.target).fast_forward if node.op == "call_function" else None
            if faster is not None:
                node.target = faster
        self.module = fx.GraphModule(graph.module, new)

    def run(self, placeholder_values: list[Any], store: ActivationStore) -> tuple[Any, ...]:
        """All graph outputs (flat), filling `store` with the kept activations; no autograd graph is built."""
        try:
            with torch.inference_mode():
                outputs, values = self.module(*placeholder_values)
        except Exception as error:
            message = f"the model failed on these inputs: {type(error).__name__}: {first_line(error)}"
            raise InputError(message) from error
        for node, value in zip(self.kept, values, strict=True):
            store.put(node, value)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
