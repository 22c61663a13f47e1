"""The walker: seeds relevance at the plan's output and runs each node's rule, back to the inputs.

Shaped like `torch.fx.Interpreter`, backwards, with its loop generated as code (`program.py`: the relevance that
has arrived at each node a local variable, each step a call of `step`, each activation freed after its last
reader); `step` and `call_rule` are the override points. It hands each rule the activations it declared (and
shape-only stand-ins for the rest), and books what each rule did not pass on (`ledger.py`). It knows no formula
and calls no autograd (a kernel reading a residual's branch through the step's role differentiates that branch
itself, on detached copies: `ops/branch.py`). `BatchedWalker` carries K relevance maps at once.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..errors import LRPGraphError, RuleError
from ..ops.adapter import RuleCall
from ..ops.sparse import RowSparse
from .ledger import Ledger
from .plan import FETCH, STAND_IN, Plan, Step
from .program import walk_program
from .schedule import Schedule
from .store import ActivationStore


@dataclass
class WalkResult:
    inputs: dict[fx.Node, Any]  # relevance that reached each input (and positional source)
    latent: dict[fx.Node, Any]  # relevance at the recorded nodes
    absorbed: dict[str, float]  # what rules did not pass on, by where it was booked
    by_rule: dict[str, float] = field(default_factory=dict)  # the same, as "bias at linear:epsilon"
    by_node: dict[fx.Node, float] = field(default_factory=dict)  # the same, by the node whose rule kept it


class Walker:
    """Walks relevance from a seed at the plan's output back to the inputs."""

    lead = 0  # leading relevance dims (K maps) carried by every tensor

    def __init__(
        self, plan: Plan, schedule: Schedule, store: ActivationStore, record: frozenset[fx.Node] = frozenset()
    ):
        self.plan, self.schedule, self.store, self.record = plan, schedule, store, record

    def run(self, seed: Any, retain: bool = False, start: fx.Node | None = None) -> WalkResult:
        """The plan's walk (generated code, `program.py`) in reverse topological order; each value is freed after
        its last use.

        retain: keep what the forward stored for another walk over the same store (recomputed values are still
        freed, and recomputed again by the next walk).
        start: a node of the plan's walk to place the seed at instead of its output (shaped like that node).
        """
        self.retain = retain
        self.inputs: dict[fx.Node, Any] = {}
        self.latent: dict[fx.Node, Any] = {}
        self.ledger = Ledger()
        self.samples = seed.shape[self.lead] if len(seed.shape) > self.lead else 1
        with torch.no_grad():
            walk_program(self.plan, self.schedule, self.record, start)(self, seed)
        return WalkResult(self.inputs, self.latent, *self.ledger.close())

    def step(self, step: Step, R: Any) -> list[Any]:
        """Run a node's rule on the relevance R it received: its relevance for each receiver (None where it sends
        none), shapes checked and what it kept booked."""
        try:
            results = self.call_rule(step, R)
        except LRPGraphError:
            raise
        except Exception as error:
            raise RuleError(
                f"rule '{step.choice.name}' ({step.op_class}) failed at {self.plan.graph.describe(step.node)}: "
                f"{type(error).__name__}: {error}"
            ) from error
        for (_, _, receiver), r in zip(step.receivers, results, strict=True):
            if r is not None:
                self._check_shape(step, receiver, r)
        if not step.exact:
            passed = [r for r in results if r is not None]
            self.ledger.book(step.node, step.absorbs, f"{step.op_class.name}:{step.choice.name}", R, passed)
        return results

    def release(self, node: fx.Node, stored: bool) -> None:
        """Free an activation after its last reader (`stored`: kept by the forward, so kept for another walk)."""
        self.store.release(node, keep_stored=self.retain and stored)

    def missing(self, node: fx.Node) -> None:
        raise KeyError(node)

    def call_rule(self, step: Step, R: Any) -> list[Any]:
        """The rule's relevance for each receiver of the step (None where it sends none)."""
        return per_receiver(step, step.adapter.apply(self.rule_call(step, R)))

    def rule_call(self, step: Step, R: Any) -> RuleCall:
        """The arguments the rule reads resolved (held, offloaded or recomputed), the rest as shape stand-ins."""
        if isinstance(R, RowSparse) and not (step.adapter.row_sparse(step.op_class) and step.kernel.linear):
            R = R.dense()
        args = {name: self._resolved(value, how) for name, value, how in step.arguments}
        out = self.store.get(step.node) if step.needs_out else self.store.stand_in(step.node)
        return RuleCall(
            step.op_class,
            step.kernel,
            step.choice.params,
            R,
            args,
            out,
            step.relevant,
            step.role,
            samples=self.samples,
            op=step.node.target,
            values={n: self.store.get(n) for n in step.role_reads},
        )

    def _resolved(self, value: Any, how: Any) -> Any:
        if how == FETCH:
            return self.store.get(value)
        if how == STAND_IN:
            return self.store.stand_in(value)
        if isinstance(how, list):
            return [self._resolved(v, h) for v, h in how]
        return value

    def _check_shape(self, step: Step, receiver: fx.Node, r: Any) -> None:
        if not isinstance(r, torch.Tensor) or not isinstance(receiver.meta.get("val"), torch.Tensor):
            return
        shape = self.store.shapes.of(receiver)
        if tuple(r.shape[self.lead :]) != tuple(shape):
            raise RuleError(
                f"rule '{step.choice.name}' of {step.op_class} node '{step.node.name}' returned relevance of shape "
                f"{tuple(r.shape)} for '{receiver.name}' of shape {tuple(shape)}"
            )


class BatchedWalker(Walker):
    """K relevance maps at once (the seed has a leading dim K): rules run natively batched or under vmap,
    sharing the forward and every activation."""

    lead = 1

    def call_rule(self, step: Step, R: Any) -> list[Any]:
        call = dataclasses.replace(self.rule_call(step, R), maps=_maps(R))
        if step.adapter.batched(step.op_class) and step.kernel.linear:
            return per_receiver(step, step.adapter.apply(dataclasses.replace(call, lead=1)))
        return self._vmapped(step, call)

    def _vmapped(self, step: Step, call: RuleCall) -> list[Any]:
        """Apply the rule to each of the K maps (vmap over dim 0 of R)."""
        missing: list[bool] = []
        R = call.R
        if isinstance(R, list):  # tuple outputs: give unreached outputs explicit zeros so vmap sees tensors
            K = _maps(R)
            shapes = self.store.shapes.of(step.node)
            R = [
                r if r is not None else torch.zeros((K, *shape), dtype=_dtype(call.R), device=_device(call.R))
                for r, shape in zip(R, shapes, strict=True)
            ]

        def one(r):
            results = per_receiver(step, step.adapter.apply(dataclasses.replace(call, R=r, vmapped=True)))
            missing[:] = [x is None for x in results]
            return tuple(torch.zeros((), dtype=_dtype(r), device=_device(r)) if x is None else x for x in results)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            outputs = torch.func.vmap(one)(R)
        return [None if gone else r for r, gone in zip(outputs, missing, strict=True)]


def per_receiver(step: Step, result: dict) -> list[Any]:
    """The rule's result, one entry (or None) per receiver of the step."""
    out = []
    for name, index, _ in step.receivers:
        r = result.get(name)
        out.append(r[index] if index is not None and r is not None else r)
    return out


def _maps(R: Any) -> int:
    if isinstance(R, list):
        return next(r.shape[0] for r in R if r is not None)
    return R.shape[0]


def _dtype(R: Any) -> torch.dtype:
    if isinstance(R, list):
        return next(r.dtype for r in R if r is not None)
    return R.dtype


def _device(R: Any) -> torch.device:
    if isinstance(R, list):
        return next(r.device for r in R if r is not None)
    return R.device
