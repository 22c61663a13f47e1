"""The traced graph run node by node (torch.fx's Interpreter) on one call's values, to read values at any node,
replace a node's value (activation patching) or take plain gradients there (attribution patching). The model
itself is never touched: its parameters are the graph's placeholders."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import fx

from .bound_call import BoundCall

Patch = Callable[[torch.Tensor], torch.Tensor]


class _Run(fx.Interpreter):
    def __init__(self, call: BoundCall, read: set[fx.Node], patches: dict[fx.Node, Patch], watch: set[fx.Node]):
        super().__init__(call.graph.module, garbage_collect_values=True)
        self.read, self.patches, self.watch = read, patches, watch
        self.found: dict[fx.Node, torch.Tensor] = {}
        self.zeros: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        if n in self.patches:
            value = self.patches[n](value)
        if n in self.watch:
            zero = torch.zeros_like(value, requires_grad=True)
            self.zeros[n] = zero
            value = value + zero
        if n in self.read:
            self.found[n] = value
        return value


def values_at(
    call: BoundCall, read: Iterable[fx.Node], patches: dict[fx.Node, Patch] | None = None
) -> dict[fx.Node, torch.Tensor]:
    """The values of `read` nodes in this call (after `patches` replaced theirs), without autograd."""
    run = _Run(call, set(read), patches or {}, set())
    with torch.no_grad():
        run.run(*call.values)
    return {n: v.detach() for n, v in run.found.items()}


def gradients_at(
    call: BoundCall, output: fx.Node, metric: Callable[[torch.Tensor], torch.Tensor], at: Iterable[fx.Node]
) -> tuple[torch.Tensor, dict[fx.Node, torch.Tensor]]:
    """(metric(output) per sample, the plain gradient of its sum at each node of `at`): no parameter gradients."""
    at = set(at)
    run = _Run(call, {output}, {}, at)
    with torch.enable_grad():
        run.run(*call.values)
        value = metric(run.found[output])
        grads = torch.autograd.grad(value.sum(), [run.zeros[n] for n in at], allow_unused=True)
    found = {n: torch.zeros_like(run.zeros[n]) if g is None else g for n, g in zip(at, grads, strict=True)}
    return value.detach(), found
