"""The replay: a plan's graph run forward under autograd with every rule in its gradient form (`ops/gradient.py`).

Gradient × input at the inputs is then the explanation computed a second time, sharing no rule kernel
with the walker: the basis of `lrpgraph.verify`. Nodes without relevance are computed as constants;
a node whose rule has no gradient form is named in `unverified` and passes nothing. Relevance at the
user's float inputs, positional sources and watched nodes is value ⊙ gradient; at integer ids it is the
gradient of their shadow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx
from torch.fx.node import map_aggregate

from ..capture.graph import op_name
from ..errors import RuleError
from ..flow.relevance import is_index
from ..ops.gradient import FORMS, Replay
from ..ops.tensors import laid_out_as
from .plan import Plan, Step


@dataclass
class Replayed:
    """Relevance from the replay ([K, …] when the seed has K maps): at the plan's inputs and positional sources,
    and at the watched nodes; the steps it could not replay, each named."""

    inputs: dict[fx.Node, torch.Tensor]
    watched: dict[fx.Node, torch.Tensor]
    unverified: list[str] = field(default_factory=list)
    rho: dict[fx.Node, torch.Tensor] = field(default_factory=dict)  # the modified gradient ρ at each watched node


def _detached(value: Any) -> Any:
    return map_aggregate(value, lambda v: v.detach() if isinstance(v, torch.Tensor) else v)


class _Run:
    """One replay: values (with gradients where relevance flows), shadows of relevant ids, leaves to read."""

    def __init__(self, plan: Plan, dtype: torch.dtype):
        self.plan, self.dtype = plan, dtype
        self.env: dict[fx.Node, Any] = {}
        self.shadows: dict[fx.Node, torch.Tensor] = {}
        self.leaves: dict[fx.Node, torch.Tensor] = {}  # terminal node → the tensor whose gradient it reads
        self.watches: dict[fx.Node, torch.Tensor] = {}  # watched node → a zero added to it (its gradient is ρ)
        self.extra: list[tuple[fx.Node, torch.Tensor]] = []  # (input, leaf): terms of rules on an input
        self.zero_inputs: list[tuple[fx.Node, list[torch.Tensor]]] = []  # identity rules whose x is 0 where y is not
        self.unverified: list[str] = []

    def placeholder(self, node: fx.Node, value: Any) -> None:
        if node not in self.plan.inputs:
            self.env[node] = _detached(value)
        elif is_index(value):
            self.env[node] = value
            self.shadows[node] = self.leaves[node] = torch.ones(value.shape, dtype=self.dtype, device=value.device)
            self.leaves[node].requires_grad_()
        else:
            self.env[node] = self.leaves[node] = value.detach().clone().requires_grad_()

    def call(self, node: fx.Node) -> None:
        args, kwargs = map_aggregate((node.args, node.kwargs), lambda a: self._value(a, detach=True))
        with torch.no_grad():
            plain = node.target(*args, **kwargs)
        step = self.plan.steps.get(node)
        if node in self.plan.sources:
            self.env[node] = self.leaves[node] = plain.detach().clone().requires_grad_()
        elif step is None:
            self.env[node] = plain
        else:
            self._step(node, step, plain)

    def _step(self, node: fx.Node, step: Step, plain: Any) -> None:
        form = FORMS.get((step.op_class.name, step.choice.name))
        integer = is_index(plain)
        self.env[node] = plain
        if form is None:
            self.unverified.append(
                f"{step.op_class}:{step.choice.name} at {self.plan.graph.describe(node)}: the rule has no gradient form"
            )
            return
        args = {name: self._argument(value, step.relevant.get(name)) for name, value in step.args.items()}
        ids = {
            name: map_aggregate(value, lambda v: self._value(v, detach=True))
            for name, value in step.args.items()
            if self._shadowed(value)
        }
        call = Replay(node.target, args, step.relevant, plain, step.adapter, step.role, integer, ids)
        try:
            result = form(call, **step.choice.params)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as error:
            self.unverified.append(
                f"{step.op_class}:{step.choice.name} at {self.plan.graph.describe(node)}: its gradient form failed "
                f"({type(error).__name__}: {error})"
            )
            return
        if integer:
            self.shadows[node] = result
        elif isinstance(result, (tuple, list)) and isinstance(plain, (tuple, list)):
            self.env[node] = type(result)(laid_out_as(r, p) for r, p in zip(result, plain, strict=True))
        else:
            self.env[node] = laid_out_as(result, plain)
        if call.zero_inputs:
            self.zero_inputs.append((node, call.zero_inputs))
            self.watch(node)
        for key, leaf in call.extra:
            receiver = _receiver(step, key)
            if receiver is None or receiver not in self.plan.inputs:
                self.unverified.append(
                    f"{step.op_class}:{step.choice.name} at {self.plan.graph.describe(node)}: a term of its rule "
                    "belongs to an input that is not the model's"
                )
            else:
                self.extra.append((receiver, leaf))

    def watch(self, node: fx.Node) -> None:
        value = self.env.get(node)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and node not in self.leaves:
            zero = torch.zeros_like(value.detach(), requires_grad=True)
            self.env[node] = value + zero
            self.watches[node] = zero

    def _argument(self, value: Any, mark: Any) -> Any:
        if isinstance(value, (list, tuple)):
            marks = mark if isinstance(mark, list) else [mark] * len(value)
            return [self._argument(v, m) for v, m in zip(value, marks, strict=True)]
        if not isinstance(value, fx.Node):
            return value
        if mark is True and value in self.shadows:
            return self.shadows[value]
        return self._value(value, detach=mark is not True)

    def _shadowed(self, value: Any) -> bool:
        """Whether an argument holds relevant ids, which the replay's arguments replace by their shadows."""
        if isinstance(value, (list, tuple)):
            return any(self._shadowed(v) for v in value)
        return isinstance(value, fx.Node) and value in self.shadows

    def _value(self, value: Any, detach: bool) -> Any:
        if not isinstance(value, fx.Node):
            return value
        found = self.env[value]
        return _detached(found) if detach else found


def _receiver(step: Step, key: Any) -> fx.Node | None:
    name, index = (key, None) if isinstance(key, str) else key
    return next((node for n, i, node in step.receivers if n == name and i == index), None)


def replay(plan: Plan, values: dict[fx.Node, Any], seed: torch.Tensor, watch: Iterable[fx.Node] = ()) -> Replayed:
    """The explanation of `seed` (relevance at the plan's output; [K, …] for `maps`) computed by the replay.

    values: every placeholder's value for this call; watch: nodes whose relevance to return as well.
    """
    watch = set(watch)
    run = _Run(plan, seed.dtype)
    with torch.enable_grad():
        for node in plan.graph.module.graph.nodes:
            if node.op == "placeholder":
                run.placeholder(node, values[node])
            elif node.op == "call_function":
                run.call(node)
            if node in watch:
                run.watch(node)
        out = run.env[plan.output]
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            if run.unverified:  # the rules it could not replay cut every path
                return Replayed({}, {}, run.unverified)
            raise RuntimeError(f"no relevance reaches the output {op_name(plan.output)} in the replay")
        maps = seed if seed.dim() > out.dim() else seed.unsqueeze(0)
        leaves = list(run.leaves.items()) + list(run.watches.items())
        extra = [leaf for _, leaf in run.extra]
        per_map = []
        for k, R in enumerate(maps):
            rho = _per_output(R.to(out.dtype), out.detach())
            grads = torch.autograd.grad(
                out, [leaf for _, leaf in leaves] + extra, rho, retain_graph=k + 1 < len(maps), allow_unused=True
            )
            per_map.append(grads)
    inputs: dict[fx.Node, torch.Tensor] = {}
    watched: dict[fx.Node, torch.Tensor] = {}
    rho: dict[fx.Node, torch.Tensor] = {}
    for i, (node, leaf) in enumerate(leaves):
        stacked = torch.stack([_relevance(node, leaf, grads[i], run) for grads in per_map])
        (watched if node in run.watches else inputs)[node] = stacked if seed.dim() > out.dim() else stacked[0]
        if node in run.watches:
            gradients = torch.stack([torch.zeros_like(leaf) if g[i] is None else g[i] for g in per_map])
            rho[node] = gradients if seed.dim() > out.dim() else gradients[0]
    for j, (node, leaf) in enumerate(run.extra):
        stacked = torch.stack([_times(leaf, grads[len(leaves) + j]) for grads in per_map])
        inputs[node] = inputs[node] + (stacked if seed.dim() > out.dim() else stacked[0])
    for node, masks in run.zero_inputs:
        R = watched[node]
        lost = sum(float(R[..., mask].abs().sum()) for mask in masks if mask.shape == R.shape[-mask.dim() :])
        total = float(R.abs().sum())
        if total > 0 and lost > 1e-9 * total:
            run.unverified.append(
                f"{_rule(plan, node)} at {plan.graph.describe(node)}: its input is 0 where its output is not, and "
                f"{100 * lost / total:.3g}% of its relevance is there: no gradient times the input can carry it"
            )
    return Replayed(inputs, watched, run.unverified, rho)


def _rule(plan: Plan, node: fx.Node) -> str:
    step = plan.steps[node]
    return f"{step.op_class}:{step.choice.name}"


def _per_output(R: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """ρ = R / y at the output (zero where R is)."""
    safe = torch.where(out == 0, torch.ones_like(out), out)
    return torch.where(R == 0, torch.zeros_like(R), R / safe)


def _relevance(node: fx.Node, leaf: torch.Tensor, grad: torch.Tensor | None, run: _Run) -> torch.Tensor:
    if node in run.shadows and node in run.leaves and run.leaves[node] is run.shadows.get(node):
        return torch.zeros_like(leaf) if grad is None else grad  # ids: the shadow's gradient is the relevance
    if node in run.watches:
        return _times(run.env[node].detach(), grad)
    return _times(leaf, grad)


def _times(value: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """value ⊙ gradient (complex values in their real components)."""
    value = value.detach()
    if grad is None:
        return torch.zeros_like(value)
    if value.is_complex():
        return torch.view_as_complex(torch.view_as_real(value) * torch.view_as_real(grad))
    return value * grad


def modified_gradients(
    plan: Plan, values: dict[fx.Node, Any], seed: Any, points: dict[str, fx.Node]
) -> dict[str, torch.Tensor]:
    """ρ at each named point: the replay's gradient there (R = a ⊙ ρ); every rule on the way must have a gradient
    form (absLRP's have none)."""
    dense = seed.dense() if hasattr(seed, "dense") else seed
    replayed = replay(plan, values, dense, points.values())
    if replayed.unverified:
        raise RuleError(f"ρ needs every rule as a modified gradient; these have none: {'; '.join(replayed.unverified)}")
    return {name: replayed.rho[node] for name, node in points.items()}
