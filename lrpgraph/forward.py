"""The forward pass: an fx Interpreter that runs the graph without autograd and keeps what the plan reads."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from .store import ActivationStore


class Recorder(fx.Interpreter):
    """Runs the graph node by node (values freed after their last use) and stores the `keep` nodes."""

    def __init__(self, module: fx.GraphModule, keep: set[fx.Node], store: ActivationStore):
        super().__init__(module, garbage_collect_values=True)
        self.keep, self.store = keep, store

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n in self.keep:
            self.store.put(n, result)
        return result


def run_forward(
    module: fx.GraphModule, placeholder_values: list[Any], keep: set[fx.Node], store: ActivationStore
) -> tuple[Any, ...]:
    """All graph outputs (flat), filling `store` with the kept activations; no autograd graph is built."""
    with torch.inference_mode():
        outputs = Recorder(module, keep, store).run(*placeholder_values)
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
