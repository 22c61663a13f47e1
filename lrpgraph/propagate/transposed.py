"""The transposed walk: the linear map a walk applies to its seed, walked the other way.

When every rule is linear in the relevance it receives, the relevance at an input is M·seed, one matrix M per
forward. Rows of M — Mᵀ applied to covectors at the inputs — come from one walk in forward order: each step's
transpose is the vector–Jacobian product of its rule with respect to R, the activations constants (taken at R = 1:
the rule being linear, any R gives the same map, and one with no zero row keeps row-skipping kernels whole), for K
covectors at once under vmap. Asking for T rows costs T maps' work; a walk asking for the D seeds of an embedding
(BiLRP) costs D. The rules are the walker's own kernels: the transpose only reads them backwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import fx

from ..errors import LRPGraphError, RuleError
from .plan import Step
from .walker import Walker, per_receiver


class TransposedWalker(Walker):
    """Mᵀ of a plan's walk over one forward: from covectors at the inputs to the covector at the output."""

    def linear(self) -> bool:
        """Whether every rule of the plan is linear in R (else the walk is no matrix to transpose)."""
        return all(step.kernel.linear for step in self.plan.steps.values())

    def run_transposed(self, covectors: dict[fx.Node, torch.Tensor], samples: int) -> torch.Tensor | None:
        """Mᵀ applied to K covectors [K, *relevance shape] at inputs: [K, *output shape] at the plan's output, or None
        where none reach it. Row k of the result, dotted with a seed, is what that seed's walk gives input
        positions where covector k is 1."""
        if not self.linear():
            raise LRPGraphError("the transposed walk needs rules linear in R; this plan has one that normalises R")
        self.retain, self.samples = True, samples
        waiting: dict[fx.Node, int] = {}
        for step in self.plan.steps.values():
            for _, _, receiver in step.receivers:
                waiting[receiver] = waiting.get(receiver, 0) + 1
        covector = dict(covectors)
        with torch.no_grad():
            for node in reversed(self.plan.order):
                step = self.plan.steps.get(node)
                if step is None or node.op == "placeholder" or node in self.plan.sources:
                    continue
                incoming = [(k, covector.get(receiver)) for k, (_, _, receiver) in enumerate(step.receivers)]
                for _, _, receiver in step.receivers:
                    waiting[receiver] -= 1
                    if not waiting[receiver]:
                        covector.pop(receiver, None)
                arrived = [(k, c) for k, c in incoming if c is not None]
                if arrived:
                    covector[node] = self._transposed(step, arrived)
        return covector.get(self.plan.output)

    def _transposed(self, step: Step, arrived: list[tuple[int, torch.Tensor]]) -> Any:
        """The step's rule transposed: Σ_k (∂ rule_k / ∂R)ᵀ c_k for the covectors c_k at its receivers."""
        like = next(_tensors(c) for _, c in arrived)
        floats, primal = self._ones(step.node, like)
        call = self.rule_call(step, None)  # activations resolved here, outside the transform
        sent: list[bool] = []

        def rule(*R: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if floats is None:
                full: Any = R[0]
            else:
                given = iter(R)
                full = [next(given) if f else None for f in floats]
            results = per_receiver(step, step.adapter.apply(dataclasses.replace(call, R=full)))
            parts = [results[k] for k, _ in arrived]
            sent[:] = [r is not None for r in parts]
            return tuple(r if r is not None else R[0].new_zeros(()) for r in parts)

        try:
            _, pullback = torch.func.vjp(rule, *primal)
            K = like.shape[0]
            cotangents = tuple(c if s else like.new_zeros((K,)) for (_, c), s in zip(arrived, sent, strict=True))
            back = torch.func.vmap(pullback)(cotangents)
        except LRPGraphError:
            raise
        except Exception as error:
            raise RuleError(
                f"rule '{step.choice.name}' ({step.op_class}) could not be transposed at "
                f"{self.plan.graph.describe(step.node)}: {type(error).__name__}: {error}"
            ) from error
        return back[0] if floats is None else _placed(back, floats)

    def _ones(self, node: fx.Node, like: torch.Tensor) -> tuple[list[bool] | None, tuple[torch.Tensor, ...]]:
        """R = 1 at `node` in the covectors' dtype: one tensor, or for a tuple output one per floating-point part
        (with which parts those are)."""
        shape, value = self.store.shapes.of(node), node.meta.get("val")
        if isinstance(value, torch.Tensor):
            return None, (torch.ones(tuple(shape), dtype=like.dtype, device=like.device),)
        floats = [isinstance(v, torch.Tensor) and v.is_floating_point() for v in value]
        ones = tuple(
            torch.ones(tuple(s), dtype=like.dtype, device=like.device) for s, f in zip(shape, floats, strict=True) if f
        )
        return floats, ones


def _placed(parts: tuple[torch.Tensor, ...], floats: list[bool]) -> list[torch.Tensor | None]:
    """A tuple output's covector: the floating-point parts in their places, None elsewhere."""
    given = iter(parts)
    return [next(given) if f else None for f in floats]


def _tensors(c: Any) -> torch.Tensor:
    """A tensor of a covector (one, or a tuple output's list of them)."""
    return c if isinstance(c, torch.Tensor) else next(x for x in c if x is not None)
