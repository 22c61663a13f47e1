"""A traced model bound to one call: the call's placeholder values and every node's concrete shape."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from ..capture.quantized import dequantized_view
from .traced_model import TracedModel


class BoundCall:
    """The traced model serving a call, with the call's values: what the plan, the forward and the walk run on."""

    def __init__(self, model_trace: TracedModel, model: torch.nn.Module, args: tuple, kwargs: dict):
        self.model_trace, self.graph = model_trace, model_trace.graph
        flat = pytree.tree_leaves((args, kwargs))
        self.values: list[Any] = self.graph.placeholder_values(dequantized_view(model), flat)
        placeholders = self.graph.module.graph.find_nodes(op="placeholder")
        self.value_of: dict[fx.Node, Any] = dict(zip(placeholders, self.values, strict=True))
        self.shapes = model_trace.shapes(self.values)

    def shape(self, node: fx.Node) -> torch.Size:
        """A tensor node's concrete shape in this call."""
        return torch.Size(self.shapes.of(node))
