"""Circuits: relevance patching (RelP, Rezaei Jafari et al. 2025), attribution patching and activation patching.

Patching asks how much a metric of the output (a logit difference) changes when a component's activation is
taken from a clean input into a corrupted run. Activation patching answers by running the corrupted forward once
per component with that activation replaced (the ground truth, one forward each). Attribution patching estimates
every component at once to first order, (a_clean − a_corr) ⊙ ∂metric/∂a at the corrupted run; RelP puts LRP's
modified gradient ρ (R = a ⊙ ρ, from a walk seeded with the metric) in place of the gradient, which stays
faithful through the layers where the gradient does not (norms, gated and smooth nonlinearities).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..capture.call import prepare_call, without_autocast
from ..engine.bound_call import BoundCall
from ..engine.conditions import unit_dim
from ..engine.interpreted import gradients_at, values_at
from ..engine.output import output_index
from ..engine.traced import traced
from ..errors import InputError
from ..presets.ruleset import RuleSet, resolve
from ..propagate.replay import replay
from .arguments import check_inputs, record_nodes

Metric = Callable[[torch.Tensor], torch.Tensor]  # the explained output -> one value per sample [B]


@dataclass
class Patching:
    """Per point, the estimated effect of patching each element: (a_clean − a_corr) ⊙ ρ_corr (RelP) or ⊙ the
    gradient (attribution patching), shaped like the point's value [B, …]; sum it over a component's elements."""

    effects: dict[str, torch.Tensor]
    method: str
    metric_clean: torch.Tensor  # [B]
    metric_corrupted: torch.Tensor  # [B]
    rules: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def per_position(self, point: str) -> torch.Tensor:
        """[B, T]: the effect of each position of a sequence point (summed over its features)."""
        effect = self._effect(point)
        return effect.reshape(*effect.shape[:2], -1).sum(-1)

    def per_unit(self, point: str) -> torch.Tensor:
        """[B, U]: the effect of each unit (channel of a feature map, else the last dim: a neuron, a feature)
        summed over positions."""
        effect = self._effect(point)
        dim = 1 + unit_dim(effect.shape[1:])
        return effect.movedim(dim, -1).reshape(effect.shape[0], -1, effect.shape[dim]).sum(1)

    def per_head(self, point: str, heads: int) -> torch.Tensor:
        """[B, T, heads]: a point holding `heads` heads side by side in its last dim (the input of an attention's
        output projection) split per head and position."""
        effect = self._effect(point)
        if effect.shape[-1] % heads:
            raise InputError(f"{point!r} has {effect.shape[-1]} features, not a multiple of {heads} heads")
        return effect.reshape(*effect.shape[:-1], heads, -1).sum(-1)

    def _effect(self, point: str) -> torch.Tensor:
        if point not in self.effects:
            raise InputError(f"{point!r} was not patched; the points are: {', '.join(self.effects)}")
        return self.effects[point]


class _Pair:
    """The clean and the corrupted call of one traced model, the explained output, and the points."""

    def __init__(self, model: torch.nn.Module, clean: Any, corrupted: Any, points: Iterable[str], options: dict):
        calls = []
        for inputs in (clean, corrupted):
            args, kwargs = prepare_call(model, inputs)
            check_inputs(model, args, kwargs, True)
            calls.append((args, kwargs))
        shapes = [[tuple(t.shape) for t in pytree.tree_leaves(c) if isinstance(t, torch.Tensor)] for c in calls]
        if shapes[0] != shapes[1]:
            raise InputError(
                f"clean and corrupted inputs must have the same shapes (patching swaps activations element by "
                f"element): clean {shapes[0]}, corrupted {shapes[1]}"
            )
        model_trace = traced(model, *calls[0], options.get("cache_dir"), options.get("tracer", "auto"))
        ruleset = options.get("ruleset")
        if ruleset is not None:
            model_trace = model_trace.for_rules(ruleset)
        self.clean, self.corrupted = (BoundCall(model_trace, model, *c) for c in calls)
        graph = model_trace.graph
        self.output = graph.outputs[output_index(graph, options.get("output"))]
        if isinstance(points, str):
            points = [points]
        self.points = record_nodes(graph, points)
        if not self.points:
            raise InputError("points must name at least one point (a module path, 'path:input' or a node name)")

    def metric(self, call: BoundCall, metric: Metric) -> torch.Tensor:
        out = values_at(call, [self.output])[self.output]
        return _per_sample(metric(out), out.shape[0])


def relevance_patching(
    model: torch.nn.Module,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    points: Iterable[str],
    rules: str | RuleSet | Mapping[str, Any] = "relp",
    *,
    output: str | int | None = None,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> Patching:
    """RelP: (a_clean − a_corr) ⊙ ρ_corr at every point, ρ the modified gradient of the walk seeded with the metric
    at the corrupted run (R = out ⊙ ∂metric/∂out there, which sums to the metric where it is linear).

    metric: a function of the explained output returning one value per sample (e.g. a logit difference).
    points: module paths (outputs), 'path:input' (the value a module is called on) or node names.
    """
    with without_autocast():
        ruleset = resolve(rules)
        pair = _Pair(model, clean, corrupted, points, {"ruleset": ruleset, "output": output, "cache_dir": cache_dir,
                                                       "tracer": tracer})  # fmt: skip
        nodes = list(pair.points.values())
        clean_values = values_at(pair.clean, [*nodes, pair.output])
        corrupted_values = values_at(pair.corrupted, [*nodes, pair.output])
        out = corrupted_values[pair.output]
        seed, value = _seed(metric, out)
        plan = pair.corrupted.model_trace.plan(pair.output, ruleset, None)
        replayed = replay(plan, pair.corrupted.value_of, seed, nodes)
        if replayed.unverified:
            raise InputError(
                f"rules {ruleset.name!r} have no modified gradient for: {'; '.join(replayed.unverified)} — RelP needs "
                "one at every op between the points and the output"
            )
        effects = {}
        for point, node in pair.points.items():
            rho = replayed.rho.get(node)
            delta = clean_values[node] - corrupted_values[node]
            effects[point] = delta * (torch.zeros_like(delta) if rho is None else rho.to(delta.dtype))
        clean_metric = _per_sample(metric(clean_values[pair.output]), out.shape[0])
    return Patching(effects, "relevance patching", clean_metric, value, ruleset.name)


def attribution_patching(
    model: torch.nn.Module,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    points: Iterable[str],
    *,
    output: str | int | None = None,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> Patching:
    """Attribution patching: (a_clean − a_corr) ⊙ ∂metric/∂a at the corrupted run, the plain gradient (no parameter
    gradients, the model untouched)."""
    with without_autocast():
        pair = _Pair(model, clean, corrupted, points, {"output": output, "cache_dir": cache_dir, "tracer": tracer})
        nodes = list(pair.points.values())
        clean_values = values_at(pair.clean, [*nodes, pair.output])
        corrupted_values = values_at(pair.corrupted, nodes)
        value, grads = gradients_at(pair.corrupted, pair.output, lambda o: _per_sample(metric(o), o.shape[0]), nodes)
        effects = {
            point: (clean_values[node] - corrupted_values[node]) * grads[node] for point, node in pair.points.items()
        }
        clean_metric = _per_sample(metric(clean_values[pair.output]), value.shape[0])
    return Patching(effects, "attribution patching", clean_metric, value)


def activation_patching(
    model: torch.nn.Module,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    point: str,
    components: str | Sequence[torch.Tensor] = "positions",
    *,
    output: str | int | None = None,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> torch.Tensor:
    """The ground truth: metric(corrupted run with the component's elements of `point` taken from the clean run) −
    metric(corrupted run), one forward per component: [C, B].

    components: "positions" (each position of a sequence point), "units" (each channel or last-dim unit), or a
    list of masks shaped like the point's value per sample (1 where the clean value is taken).
    """
    with without_autocast():
        pair = _Pair(model, clean, corrupted, [point], {"output": output, "cache_dir": cache_dir, "tracer": tracer})
        node = pair.points[point]
        a_clean = values_at(pair.clean, [node])[node]
        masks = _components(components, tuple(a_clean.shape[1:]), a_clean.dtype)
        base = pair.metric(pair.corrupted, metric)
        effects = []
        for mask in masks:
            mask = mask.to(a_clean.device)

            def patched(value: torch.Tensor, mask: torch.Tensor = mask) -> torch.Tensor:
                return value + mask * (a_clean - value)

            out = values_at(pair.corrupted, [pair.output], {node: patched})[pair.output]
            effects.append(_per_sample(metric(out), out.shape[0]) - base)
    return torch.stack(effects)


def _components(components: Any, shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    if components == "positions":
        if len(shape) < 2:
            raise InputError(f"components='positions' needs a sequence point [B, T, …], this one is {(-1, *shape)}")
        return [torch.zeros(shape, dtype=dtype).index_fill_(0, torch.tensor([t]), 1.0) for t in range(shape[0])]
    if components == "units":
        dim = unit_dim(shape)
        return [torch.zeros(shape, dtype=dtype).index_fill_(dim, torch.tensor([u]), 1.0) for u in range(shape[dim])]
    if isinstance(components, str) or not isinstance(components, Sequence) or not components:
        raise InputError(f"components must be 'positions', 'units' or a list of masks, not {components!r}")
    try:
        return [torch.as_tensor(m, dtype=dtype).expand(shape) for m in components]
    except RuntimeError:
        raise InputError(f"each component mask must broadcast to the point's shape per sample {shape}") from None


def _seed(metric: Metric, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out ⊙ ∂Σmetric/∂out, metric per sample): the relevance the walk starts from."""
    with torch.enable_grad():
        leaf = out.detach().clone().requires_grad_()
        value = _per_sample(metric(leaf), out.shape[0])
        (grad,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True)
    if grad is None:
        raise InputError("the metric does not depend on the model's output")
    return (out * grad).detach(), value.detach()


def _per_sample(value: Any, batch: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() > 1 or (value.dim() == 1 and value.shape[0] != batch):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"the metric must return one value per sample [{batch}] (or one value), got {shape}")
    return value if value.dim() == 1 else value.reshape(1).expand(batch) / batch
