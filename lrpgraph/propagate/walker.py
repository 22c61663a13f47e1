"""The walker: a reverse interpreter over a plan that seeds relevance at the output and runs each node's rule.

Shaped like `torch.fx.Interpreter`, backwards: one loop over the plan's walk order, an accumulator
holding the relevance that has arrived at each node, `run_node` and `call_rule` as override points.
It hands each rule the activations it declared (and shape-only stand-ins for the rest), frees
relevance and activations as soon as nothing later needs them, and books what each rule did not
pass on. It knows no formula and calls no autograd (a kernel reading a residual's branch through the step's role
differentiates that branch itself, on detached copies: `ops/branch.py`). `BatchedWalker` carries K relevance
maps at once.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..errors import LRPGraphError, RuleError
from ..ops.adapter import RuleCall
from ..ops.sparse import RowSparse
from .plan import Plan, Step
from .schedule import Schedule
from .store import ActivationStore


@dataclass
class WalkResult:
    inputs: dict[fx.Node, Any]  # relevance that reached each input (and positional source)
    latent: dict[fx.Node, Any]  # relevance at the recorded nodes
    absorbed: dict[str, torch.Tensor]  # what rules did not pass on, by where it was booked
    by_rule: dict[str, torch.Tensor] = field(default_factory=dict)  # the same, as "bias at linear:epsilon"
    by_node: dict[fx.Node, torch.Tensor] = field(default_factory=dict)  # the same, by the node whose rule kept it


class Accumulator:
    """Relevance arriving at each node, summed over the node's users until its own step takes it."""

    def __init__(self) -> None:
        self._values: dict[fx.Node, Any] = {}
        self._owned: set[fx.Node] = set()  # sums made here, safe to add into in place

    def add(self, node: fx.Node, r: Any) -> None:
        current = self._values.get(node)
        if current is None:
            self._values[node] = r
        elif isinstance(current, list):
            self._values[node] = [
                a if b is None else b if a is None else a + b for a, b in zip(current, r, strict=True)
            ]
        elif node in self._owned and current.dtype == torch.promote_types(current.dtype, r.dtype):
            current.add_(r)
        else:
            self._values[node] = current + r
            self._owned.add(node)

    def pop(self, node: fx.Node) -> Any:
        self._owned.discard(node)
        return self._values.pop(node, None)


class Walker:
    """Walks relevance from a seed at the plan's output back to the inputs."""

    lead = 0  # leading relevance dims (K maps) carried by every tensor

    def __init__(
        self, plan: Plan, schedule: Schedule, store: ActivationStore, record: frozenset[fx.Node] = frozenset()
    ):
        self.plan, self.schedule, self.store, self.record = plan, schedule, store, record

    def run(self, seed: Any, retain: bool = False) -> WalkResult:
        """One loop in reverse topological order; each value is freed after its last use.

        retain: keep what the forward stored for another walk over the same store (recomputed values are still
        freed, and recomputed again by the next walk).
        """
        self.retain = retain
        self.relevance = Accumulator()
        self.relevance.add(self.plan.output, seed)
        self.inputs: dict[fx.Node, Any] = {}
        self.latent: dict[fx.Node, Any] = {}
        device = seed.device
        self.absorbed: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros((), dtype=torch.float64, device=device)
        )
        self.by_rule: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64, device=device))
        self.by_node: dict[fx.Node, torch.Tensor] = {}
        self.samples = seed.shape[self.lead] if len(seed.shape) > self.lead else 1
        with torch.no_grad():
            for node in self.plan.order:
                R = self.relevance.pop(node)
                if R is not None:
                    self.run_node(node, R)
                self.free(node)
        return WalkResult(self.inputs, self.latent, dict(self.absorbed), dict(self.by_rule), self.by_node)

    def run_node(self, node: fx.Node, R: Any) -> None:
        """Record, end the walk at inputs and positional sources, or run the node's rule and pass its result on."""
        if node in self.record:
            self.latent[node] = R
        if node.op == "placeholder" or node in self.plan.sources:
            self.inputs[node] = R
            return
        step = self.plan.steps[node]
        try:
            results = self.call_rule(step, R)
        except LRPGraphError:
            raise
        except Exception as error:
            raise RuleError(
                f"rule '{step.choice.name}' ({step.op_class}) failed at {self.plan.graph.describe(node)}: "
                f"{type(error).__name__}: {error}"
            ) from error
        passed = torch.zeros((), dtype=torch.float64, device=_device(R))
        for (_, _, receiver), r in zip(step.receivers, results, strict=True):
            if r is None:
                continue
            self._check_shape(step, receiver, r)
            if not step.exact:
                passed = passed + _total(r)
            self.relevance.add(receiver, r)
        if not step.exact:
            kept = _total(R) - passed
            self.absorbed[step.absorbs] += kept
            self.by_rule[f"{step.absorbs} at {step.op_class.name}:{step.choice.name}"] += kept
            self.by_node[node] = kept

    def call_rule(self, step: Step, R: Any) -> list[Any]:
        """The rule's relevance for each receiver of the step (None where it sends none)."""
        return _per_receiver(step, step.adapter.apply(self.rule_call(step, R)))

    def rule_call(self, step: Step, R: Any) -> RuleCall:
        """The arguments the rule reads resolved (held, offloaded or recomputed), the rest as shape stand-ins."""
        if isinstance(R, RowSparse) and not (step.adapter.row_sparse(step.op_class) and step.kernel.linear):
            R = R.dense()
        reads = set(step.reads)
        args = {name: self._resolve(value, reads) for name, value in step.args.items()}
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

    def free(self, node: fx.Node) -> None:
        """Release the activations whose last reader is this node."""
        step = self.plan.steps.get(node)
        for read in step.reads if step is not None else ():
            if self.schedule.last_reader.get(read) is node:
                self.store.release(read, keep_stored=self.retain and read in self.schedule.keep)

    def _resolve(self, value: Any, reads: set[fx.Node]) -> Any:
        if isinstance(value, fx.Node):
            return self.store.get(value) if value in reads or value.op == "placeholder" else self.store.stand_in(value)
        if isinstance(value, (list, tuple)):
            return [self._resolve(v, reads) for v in value]
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
            return _per_receiver(step, step.adapter.apply(dataclasses.replace(call, lead=1)))
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
            results = _per_receiver(step, step.adapter.apply(dataclasses.replace(call, R=r, vmapped=True)))
            missing[:] = [x is None for x in results]
            return tuple(torch.zeros((), dtype=_dtype(r), device=_device(r)) if x is None else x for x in results)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            outputs = torch.func.vmap(one)(R)
        return [None if gone else r for r, gone in zip(outputs, missing, strict=True)]


def _per_receiver(step: Step, result: dict) -> list[Any]:
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


def _total(R: Any) -> torch.Tensor:
    if isinstance(R, RowSparse):
        return _sum(R.values).double()
    if isinstance(R, list):
        parts = [_total(r) for r in R if r is not None]
        return sum(parts[1:], parts[0]) if parts else torch.zeros((), dtype=torch.float64)
    return _sum(R).double()


def _sum(t: torch.Tensor) -> torch.Tensor:
    """Sum in the tensor's own precision (float32 for half types): a float64 sum of float32 is 20× slower."""
    if t.is_complex():  # relevance of real and imaginary components
        t = torch.view_as_real(t)
    return t.sum(dtype=torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t.sum()
