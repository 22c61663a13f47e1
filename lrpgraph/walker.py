"""The walker: a reverse topological walk that seeds relevance at the output and applies each node's rule.

It sums relevance arriving from several users, hands each rule the activations it declared (and
shape-only stand-ins for the rest), frees relevance and activations as soon as nothing later
needs them, and books what each rule did not pass on. It knows no formula and calls no autograd.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from .plan import Plan, Step
from .rules.adapter import Call
from .rules.tensors import BATCHED, MAPS, SAMPLES
from .schedule import Schedule
from .sparse import RowSparse
from .store import ActivationStore, meta_value


@dataclass
class WalkResult:
    inputs: dict[fx.Node, Any]
    latent: dict[fx.Node, Any]
    absorbed: dict[str, torch.Tensor]


def walk(
    plan: Plan,
    schedule: Schedule,
    store: ActivationStore,
    seed: torch.Tensor,
    record: frozenset[fx.Node] = frozenset(),
    targets: int | None = None,
) -> WalkResult:
    """Walk relevance from `seed` at the plan's output back to the inputs.

    With `targets` = K the seed has a leading dimension of K relevance maps, carried at once: each
    rule runs batched over them (torch.func.vmap), sharing the forward and every promise.
    """
    relevance: dict[fx.Node, Any] = {plan.output: seed}
    owned: set[fx.Node] = set()
    inputs: dict[fx.Node, Any] = {}
    latent: dict[fx.Node, Any] = {}
    absorbed: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64, device=seed.device))
    shape = seed.shape[0 if targets is None else 1 :]
    samples = SAMPLES.set(shape[0] if len(shape) else 1)
    try:
        _walk(plan, schedule, store, record, targets, relevance, owned, inputs, latent, absorbed)
    finally:
        SAMPLES.reset(samples)
    return WalkResult(inputs, latent, dict(absorbed))


def _walk(plan, schedule, store, record, targets, relevance, owned, inputs, latent, absorbed) -> None:
    with torch.no_grad():
        for node in plan.order:
            R = relevance.pop(node, None)
            if node in record and R is not None:
                latent[node] = R
            if node.op == "placeholder" or node in plan.sources:
                if R is not None:
                    inputs[node] = R
                continue
            step = plan.steps[node]
            if R is not None:
                passed = _apply(step, R, store, relevance, owned, count=not step.exact, batched=targets is not None)
                if not step.exact:
                    absorbed[step.absorbs] += _total(R) - passed
            for read in step.reads:
                if schedule.last_reader.get(read) is node:
                    store.release(read)


def _apply(
    step: Step, R: Any, store: ActivationStore, relevance: dict, owned: set, count: bool, batched: bool
) -> torch.Tensor:
    reads = set(step.reads)
    args = {name: _resolve(value, reads, store) for name, value in step.args.items()}
    out = store.get(step.node) if step.needs_out else meta_value(step.node)
    if isinstance(R, RowSparse) and not step.adapter.row_sparse(step.op_class):
        R = R.dense()
    call = Call(step.op_class, step.kernel, step.choice.params, R, args, out, step.relevant, step.role)
    if batched and step.adapter.batched(step.op_class):
        results = _targets_of(step, step.adapter.apply(dataclasses.replace(call, lead=1)))
    elif batched:
        results = _run_batched(step, call)
    else:
        results = _targets_of(step, step.adapter.apply(call))
    passed = torch.zeros((), dtype=torch.float64, device=_device(R))
    for (_, _, target), r in zip(step.targets, results, strict=True):
        if r is None:
            continue
        _check_shape(step, target, r, batched)
        if count:
            passed = passed + _total(r)
        _accumulate(relevance, owned, target, r)
    return passed


def _targets_of(step: Step, result: dict) -> list[Any]:
    """The rule's result, one entry (or None) per relevance target of the step."""
    out = []
    for name, index, _ in step.targets:
        r = result.get(name)
        out.append(r[index] if index is not None and r is not None else r)
    return out


def _run_batched(step: Step, call: Call) -> list[Any]:
    """Apply the rule to each of the K relevance maps at once (vmap over dim 0 of R)."""
    missing: list[bool] = []
    R = call.R
    if isinstance(R, list):  # tuple outputs: give unreached outputs explicit zeros so vmap sees tensors
        K = next(r.shape[0] for r in R if r is not None)
        shapes = [v.shape for v in step.node.meta["val"]]
        R = [
            r if r is not None else torch.zeros((K, *shape), dtype=_dtype(call.R), device=_device(call.R))
            for r, shape in zip(R, shapes, strict=True)
        ]

    def one(r):
        results = _targets_of(step, step.adapter.apply(dataclasses.replace(call, R=r)))
        missing[:] = [x is None for x in results]
        return tuple(torch.zeros((), dtype=_dtype(r), device=_device(r)) if x is None else x for x in results)

    token, maps = BATCHED.set(True), MAPS.set(len(R[0]) if isinstance(R, list) else len(R))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            outputs = torch.func.vmap(one)(R)
    finally:
        BATCHED.reset(token)
        MAPS.reset(maps)
    return [None if gone else r for r, gone in zip(outputs, missing, strict=True)]


def _dtype(R: Any) -> torch.dtype:
    if isinstance(R, list):
        return next(r.dtype for r in R if r is not None)
    return R.dtype


def _resolve(value: Any, reads: set[fx.Node], store: ActivationStore) -> Any:
    if isinstance(value, fx.Node):
        return store.get(value) if value in reads or value.op == "placeholder" else meta_value(value)
    if isinstance(value, (list, tuple)):
        return [_resolve(v, reads, store) for v in value]
    return value


def _accumulate(relevance: dict, owned: set, target: fx.Node, r: Any) -> None:
    current = relevance.get(target)
    if current is None:
        relevance[target] = r
    elif isinstance(current, list):
        relevance[target] = [a if b is None else b if a is None else a + b for a, b in zip(current, r, strict=True)]
    elif target in owned and current.dtype == torch.promote_types(current.dtype, r.dtype):
        current.add_(r)
    else:
        relevance[target] = current + r
        owned.add(target)


def _total(R: Any) -> torch.Tensor:
    if isinstance(R, RowSparse):
        return _sum(R.values).double()
    if isinstance(R, list):
        parts = [_total(r) for r in R if r is not None]
        return sum(parts[1:], parts[0]) if parts else torch.zeros((), dtype=torch.float64)
    return _sum(R).double()


def _sum(t: torch.Tensor) -> torch.Tensor:
    """Sum in the tensor's own precision (float32 for half types): a float64 sum of float32 is 20× slower."""
    return t.sum(dtype=torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t.sum()


def _device(R: Any) -> torch.device:
    if isinstance(R, list):
        return next(r.device for r in R if r is not None)
    return R.device


def _check_shape(step: Step, target: fx.Node, r: Any, batched: bool) -> None:
    val = target.meta.get("val")
    shape = tuple(r.shape[1:] if batched else r.shape) if isinstance(r, torch.Tensor) else None
    if shape is not None and isinstance(val, torch.Tensor) and shape != tuple(val.shape):
        raise RuntimeError(
            f"rule '{step.choice.name}' of {step.op_class} node '{step.node.name}' returned relevance of shape "
            f"{tuple(r.shape)} for '{target.name}' of shape {tuple(val.shape)}"
        )
