"""The forward pass: the traced graph run as generated code, without autograd, returning what the plan keeps.

For each set of activations to keep, a copy of the graph whose output also returns those nodes is
compiled once (torch.fx code generation, which frees every other value after its last use). This
is the fx Interpreter's job without its per-node Python overhead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from .errors import InputError, first_line
from .graph import Graph
from .store import ActivationStore


def recording_module(graph: Graph, keep: frozenset[fx.Node]) -> tuple[fx.GraphModule, list[fx.Node]]:
    """A GraphModule returning (graph outputs, kept activations); cached on the graph per keep set."""
    cache = graph._recorders
    if keep not in cache:
        order = {n: i for i, n in enumerate(graph.module.graph.nodes)}
        kept = sorted(keep, key=order.__getitem__)
        new = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        outputs = new.graph_copy(graph.module.graph, mapping)
        new.output((outputs, tuple(mapping[n] for n in kept)))
        cache[keep] = (fx.GraphModule(graph.module, new), kept)
    return cache[keep]


def run_forward(
    graph: Graph, placeholder_values: list[Any], keep: set[fx.Node], store: ActivationStore
) -> tuple[Any, ...]:
    """All graph outputs (flat), filling `store` with the kept activations; no autograd graph is built."""
    module, kept = recording_module(graph, frozenset(keep))
    try:
        with torch.inference_mode():
            outputs, values = module(*placeholder_values)
    except Exception as error:
        raise InputError(f"the model failed on these inputs: {type(error).__name__}: {first_line(error)}") from error
    for node, value in zip(kept, values, strict=True):
        store.put(node, value)
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
