"""`verify`: the explanation computed a second time, by a computation that shares no rule kernel with the walker.

The traced graph is replayed forward under autograd with every rule written as a modified gradient
(`ops/gradient.py`, the way LXT writes AttnLRP); gradient × input at the inputs, positional sources and
recorded modules must equal what `explain` returned. A kernel that is wrong by 1% makes `ok` false. Rules
with no gradient form (absLRP normalises relevance at every op, which no gradient can) are named in
`unverified`, never passed silently.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..capture.call import prepare_call, without_autocast
from ..capture.graph import op_name
from ..capture.random_state import random_state, set_random_state
from ..engine.bound_call import BoundCall
from ..engine.output import ForwardPass, output_index
from ..engine.positional import positional_outputs, positional_sources
from ..engine.traced import traced
from ..errors import InputError
from ..presets.ruleset import RuleSet, resolve
from ..propagate.plan import Plan
from ..propagate.replay import Replayed, replay
from ..propagate.walker import BatchedWalker, Walker
from .arguments import record_nodes
from .explain import explain
from .explanation import Explanation
from .targets import Target


@dataclass
class Verification:
    """How well `explain` and the replay agree.

    ok: every rule was replayed and the largest difference is within `tolerance`.
    max_error: the largest |explain − replay| over every compared tensor, divided by the largest |relevance|
        among them (nan when nothing could be compared).
    errors: the same, per compared tensor ("input_ids", "latent:model.layers.0", "positional"), and "nodes": the
        largest difference at any node of the walk, relative to that node's largest relevance.
    worst: where the walk first differs from the replay (walk order): the node whose rule handed on the wrong
        relevance, its op, module and rule, the node that received it and its error; None when all agree.
    unverified: rules that have no gradient form, or could not be replayed, each with its node.
    """

    ok: bool
    max_error: float
    errors: dict[str, float]
    worst: dict[str, Any] | None
    unverified: list[str]
    tolerance: float
    explanation: Explanation = field(repr=False)

    def __bool__(self) -> bool:
        return self.ok


def verify(
    model: torch.nn.Module,
    inputs: Any,
    target: Target = None,
    rules: str | RuleSet | Mapping[str, Any] = "epsilon",
    *,
    tolerance: float = 1e-4,
    **options: Any,
) -> Verification:
    """Explain `model(inputs)` (the same arguments and options as `explain`) and check the explanation against
    the replay, at the inputs, at every recorded module and at every node of the walk (both are held at once: use
    small inputs). Use float64 models where float32 rounding would hide a 1e-4 difference."""
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance > 0:
        raise InputError(f"tolerance must be a positive number, not {tolerance!r}")
    drawn = random_state()
    ex = explain(model, inputs, target, rules, **options)
    with without_autocast():
        set_random_state(drawn)  # a model recorded at every call is recorded again: from the draws explain's saw
        setup = _Setup(model, inputs, resolve(rules), options)
        seed = ex.seed
        nodes = _relevant_nodes(setup.plan)
        set_random_state(drawn)  # random ops in the forward (a random mask, sampled keys) draw what explain's drew
        replayed = replay(setup.plan, setup.call.value_of, seed, {*nodes, *setup.recorded.values()})
        pairs = _pairs(ex, setup, replayed)
        scale = max((float(a.abs().max()) for a, _ in pairs.values() if a.numel()), default=0.0)
        errors = {
            name: float((a - b.to(a.dtype)).abs().max()) / scale if scale > 0 and a.numel() else 0.0
            for name, (a, b) in pairs.items()
        }
        worst = None
        if not replayed.unverified:
            set_random_state(drawn)
            worst = _first_difference(setup, seed, nodes, replayed.watched, tolerance)
            errors["nodes"] = worst.pop("largest") if worst else 0.0
            worst = worst or None
        max_error = max(errors.values(), default=float("nan")) if scale > 0 else float("nan")
        ok = not replayed.unverified and max_error <= tolerance
    return Verification(ok, max_error, errors, worst, replayed.unverified, tolerance, ex)


class _Setup:
    """The call, plan and positional sources `explain` used for these inputs (the trace and plan are cached)."""

    def __init__(self, model: torch.nn.Module, inputs: Any, ruleset: RuleSet, options: dict[str, Any]):
        args, kwargs = prepare_call(model, inputs)
        self.ruleset = ruleset
        model_trace = traced(model, args, kwargs, options.get("cache_dir"), options.get("tracer", "auto"))
        self.call = BoundCall(model_trace.for_rules(ruleset), model, args, kwargs)
        graph = self.call.graph
        self.index = output_index(graph, options.get("output"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the explain has said it already
            self.sources = positional_sources(self.call, ruleset, model)
        self.plan: Plan = self.call.model_trace.plan(
            graph.outputs[self.index], ruleset, options.get("fallback"), frozenset(s.node for s in self.sources)
        )
        self.recorded = record_nodes(graph, options.get("record", ()))


def _pairs(ex: Explanation, setup: _Setup, replayed: Replayed) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(explain's tensor, the replay's) for every input, recorded module and the positional relevance."""
    graph = setup.call.graph
    by_name = {name: node for node, name in graph.input_names.items()}
    pairs = {}
    for name, r in ex.relevance.items():
        node = by_name[name]
        pairs[name] = (r.detach(), replayed.inputs.get(node, torch.zeros_like(r)))
    for path, node in setup.recorded.items():
        r = ex.latent[path]
        pairs[f"latent:{path}"] = (r.detach(), replayed.watched.get(node, torch.zeros_like(r)))
    if setup.ruleset.positional and ex.positional is not None:
        seed = ex.seed
        lead = (seed.shape[0],) if seed.dim() > ex.output.dim() else ()
        batch = ex.output.shape[0]
        positional, _, _ = positional_outputs(
            setup.sources,
            replayed.inputs,
            setup.ruleset.positional,
            lead,
            dict(ex.relevance),
            (batch, seed.dtype, seed.device),
        )
        if isinstance(positional, dict):
            pairs.update({f"positional:{k}": (ex.positional[k], v) for k, v in positional.items()})
        else:
            pairs["positional"] = (ex.positional, positional)
    return pairs


def _relevant_nodes(plan: Plan) -> list[fx.Node]:
    """The nodes whose relevance both computations hold: floating-point tensors on the walk, the output aside."""
    return [
        n
        for n in plan.order
        if isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].is_floating_point() and n is not plan.output
    ]


def _first_difference(
    setup: _Setup, seed: torch.Tensor, nodes: list[fx.Node], replayed: dict[fx.Node, torch.Tensor], tolerance: float
) -> dict[str, Any]:
    """The walk again, recording every node, against the replay at every node. Each node's error is relative to
    its own largest relevance (floored at 1e-8 of the largest anywhere, so nodes nearly without relevance do not
    count rounding as error). Returns {"largest": the largest error}, and — for the first node in walk order
    above `tolerance` — the rule (of one of its users) that handed it on."""
    plan = setup.plan
    forward = ForwardPass(setup.call, plan, None, None, False)
    forward.run(setup.index)
    walker = (BatchedWalker if seed.dim() > plan.output.meta["val"].dim() else Walker)(
        plan, forward.schedule, forward.store, frozenset(nodes)
    )
    walked = {n: r.dense() if hasattr(r, "dense") else r for n, r in walker.run(seed).latent.items()}
    compared = [(n, walked[n], replayed[n]) for n in nodes if n in walked and n in replayed and walked[n].numel()]
    floor = 1e-8 * max((float(a.abs().max()) for _, a, _ in compared), default=0.0)
    found: dict[str, Any] = {"largest": 0.0}
    for node, a, b in compared:
        denominator = max(float(a.abs().max()), floor)
        b = torch.where((a == 0) & b.isnan(), 0.0, b.to(a.dtype))  # the replay's value ⊙ gradient at a −∞ mask: ∞·0
        error = float((a - b).abs().max()) / denominator if denominator > 0 else 0.0
        error = error if math.isfinite(error) else math.inf  # any other NaN in the replay is a difference, not none
        if error > tolerance and len(found) == 1:
            found.update(_culprit(plan, setup.call.graph, node, error))
        found["largest"] = max(found["largest"], error)
    return found


def _culprit(plan: Plan, graph, node: fx.Node, error: float) -> dict[str, Any]:
    users = [u for u in plan.order if u in plan.steps and any(r is node for _, _, r in plan.steps[u].receivers)]
    user = users[0] if users else node
    step = plan.steps.get(user)
    return {
        "node": user.name,
        "op": op_name(user),
        "module": graph.module_path(user) or "<model>",
        "rule": f"{step.op_class}:{step.choice.name}" if step else None,
        "differs_at": node.name,
        "error": error,
    }
