"""The walker: a reverse topological walk that seeds relevance at the output and applies each node's rule.

It sums relevance arriving from several users, hands each rule the activations it declared (and
shape-only stand-ins for the rest), frees relevance and activations as soon as nothing later
needs them, and books what each rule did not pass on. It knows no formula and calls no autograd.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from .plan import Plan, Step
from .rules.adapter import Call
from .store import ActivationStore, meta_value


@dataclass
class WalkResult:
    inputs: dict[fx.Node, Any]
    latent: dict[fx.Node, Any]
    absorbed: dict[str, torch.Tensor]


def walk(
    plan: Plan, store: ActivationStore, seed: torch.Tensor, record: frozenset[fx.Node] = frozenset()
) -> WalkResult:
    relevance: dict[fx.Node, Any] = {plan.output: seed}
    owned: set[fx.Node] = set()
    inputs: dict[fx.Node, Any] = {}
    latent: dict[fx.Node, Any] = {}
    absorbed: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64, device=seed.device))
    with torch.no_grad():
        for node in plan.order:
            R = relevance.pop(node, None)
            if node in record and R is not None:
                latent[node] = R
            if node.op == "placeholder":
                if R is not None:
                    inputs[node] = R
                continue
            step = plan.steps[node]
            if R is not None:
                passed = _apply(step, R, store, relevance, owned, count=not step.exact)
                if not step.exact:
                    absorbed[step.absorbs] += _total(R) - passed
            for read in step.reads:
                if plan.last_reader.get(read) is node:
                    store.release(read)
    return WalkResult(inputs, latent, dict(absorbed))


def _apply(step: Step, R: Any, store: ActivationStore, relevance: dict, owned: set, count: bool) -> torch.Tensor:
    reads = set(step.reads)
    args = {name: _resolve(value, reads, store) for name, value in step.args.items()}
    out = store.get(step.node) if step.needs_out else meta_value(step.node)
    call = Call(step.op_class, step.kernel, step.choice.params, R, args, out, step.relevant, step.role)
    result = step.adapter.apply(call)
    passed = torch.zeros((), dtype=torch.float64, device=_device(R))
    for name, index, target in step.targets:
        r = result.get(name)
        if index is not None and r is not None:
            r = r[index]
        if r is None:
            continue
        _check_shape(step, target, r)
        if count:
            passed = passed + _total(r)
        _accumulate(relevance, owned, target, r)
    return passed


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


def _check_shape(step: Step, target: fx.Node, r: Any) -> None:
    val = target.meta.get("val")
    if isinstance(r, torch.Tensor) and isinstance(val, torch.Tensor) and tuple(r.shape) != tuple(val.shape):
        raise RuntimeError(
            f"rule '{step.choice.name}' of {step.op_class} node '{step.node.name}' returned relevance of shape "
            f"{tuple(r.shape)} for '{target.name}' of shape {tuple(val.shape)}"
        )
