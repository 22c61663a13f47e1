"""A deferred head: an output made by a last layer acting on each row alone, computed at the rows a seed reads.

A language model's vocabulary head, `aten.linear` over hidden states [B, T, H], makes logits
[B, T, V] for every position, and is as costly as a few decoder layers; a token target reads one row
per sample. When the plan's rule for the head reads relevance by rows (so it never needs the other
rows), the forward stops at the head's input, the head runs on the rows the seed reads, and the full
output is made only when someone asks for it (`Explanation.output`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from ..capture.graph import INPUT
from .plan import Plan

aten = torch.ops.aten


@dataclass(frozen=True)
class Head:
    """The explained output node `node` = linear(`input`, `weight`, `bias`), with a constant weight and bias."""

    node: fx.Node
    input: fx.Node
    weight: fx.Node
    bias: fx.Node | None

    def rows(self, x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        """The output at rows `index` [n] of its [B·T, V] view: [n, V]."""
        picked = x.reshape(-1, x.shape[-1]).index_select(0, index.to(x.device))
        return aten.linear.default(picked, weight, bias)

    @staticmethod
    def full(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The whole output: the op the forward would have run."""
        return aten.linear.default(x, weight, bias)


def deferred_head(plan: Plan) -> Head | None:
    """The plan's output as a Head when it can be deferred: a [B, T, V] linear of a node, read by nothing but the
    graph's output, whose weight and bias are model state, and whose rule takes relevance by rows."""
    node = plan.output
    if node.op != "call_function" or node.target is not aten.linear.default or len(node.users) != 1:
        return None
    if next(iter(node.users)).op != "output" or node.kwargs:
        return None
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() != 3:
        return None
    x, weight, *rest = node.args
    bias = rest[0] if rest else None
    kinds = plan.graph.kinds
    if not isinstance(x, fx.Node) or any(
        not isinstance(p, fx.Node) or kinds.get(p, INPUT) == INPUT for p in (weight, bias) if p is not None
    ):
        return None
    step = plan.steps.get(node)
    if step is None or step.is_fallback or not step.kernel.linear:
        return None
    if not (step.adapter.row_sparse(step.op_class) and step.adapter.batched(step.op_class)):
        return None
    return Head(node, x, weight, bias)
