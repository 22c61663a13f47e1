"""An Explanation assembled from what one explain call computed: relevance per input (zeros where none arrived),
PA-LRP's outputs, relevance at recorded modules, where the relevance went, and what the call cost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from ..capture.graph import Graph, op_name
from ..engine.bound_call import BoundCall
from ..engine.output import DeferredOutput, ForwardPass
from ..engine.positional import positional_outputs
from ..engine.walks import Walks
from ..flow.positional import PositionalSource
from ..flow.relevance import moves_values
from ..ops.sparse import RowSparse
from ..presets.ruleset import RuleSet
from ..propagate.plan import Plan
from ..propagate.walker import WalkResult
from .explanation import Conservation, Explanation


@dataclass
class Walked:
    """What one explain call computed, from which its Explanation is assembled."""

    call: BoundCall  # the traced model with the call's values
    plan: Plan
    forward: ForwardPass  # its schedule and store, the output the seed read (`out`) and the one returned (`output`)
    walks: Walks  # how the maps were split into walks
    seed: Any
    targets: int | None  # K for K targets walked at once
    result: WalkResult
    ruleset: RuleSet
    sources: list[PositionalSource]
    recorded: dict[str, fx.Node]
    conditional: WalkResult | None = None  # the walks of `conditions=`
    conditions: int = 0  # K, their number
    rho: dict[str, torch.Tensor] | None = None  # rho=True: the modified gradient at each recorded point


def assemble(w: Walked, started: float) -> Explanation:
    """Relevance per input (zeros for a float input no rule sent any to; integer inputs read only as indices listed
    as unreached), PA-LRP outputs, latent relevance, conservation, stats."""
    dtype, out, plan, store = w.seed.dtype, w.forward.out, w.plan, w.forward.store
    lead = () if w.targets is None else (w.targets,)
    relevance, unreached = _per_input(w, w.result.inputs, lead, dtype)
    conditional = {}
    if w.conditional is not None:
        conditional = _per_input(w, w.conditional.inputs, (w.conditions,), dtype)[0]
    batch = out.shape[0] if len(out.shape) else 1
    positional = signed = mixed = None
    if w.ruleset.positional:
        positional, signed, mixed = positional_outputs(
            w.sources, w.result.inputs, w.ruleset.positional, lead, relevance, (batch, dtype, out.device)
        )
    conservation = Conservation(
        seed=_per_sample(w.seed, batch, lead),
        inputs={name: _per_sample(r, batch, lead) for name, r in relevance.items()},
        absorbed={k: float(v) for k, v in w.result.absorbed.items()},
        positional=None if signed is None else signed.double(),
    )
    latent = {
        path: _latent(w.result.latent.get(node), store.shapes.of(node), dtype, out.device, lead)
        for path, node in w.recorded.items()
    }
    return Explanation(
        relevance=relevance,
        output=_own(w.forward.output, w.call.value_of),
        seed_relevance=w.seed if isinstance(w.seed, RowSparse) else _plain(w.seed),
        conservation=conservation,
        rules=w.ruleset.name,
        latent=latent,
        conditional=conditional,
        rho={k: _plain(v) for k, v in (w.rho or {}).items()},
        positional=positional,
        combined=mixed,
        fallbacks=plan.fallbacks,
        unreached=unreached,
        stats={
            "seconds": time.perf_counter() - started,
            "tracer": "recorded" if w.call.graph.recorded else "export",
            "peak_activation_bytes": store.peak_bytes,
            "kept_nodes": len(w.forward.schedule.keep),
            "checkpoints": len(w.forward.schedule.checkpoints),
            "recomputed_nodes": store.recomputed_nodes,
            "recompute_seconds": store.recompute_seconds,
            "offloaded_bytes": store.offloaded_bytes,
            "nodes": len(plan.steps),
            "rules": plan.rule_counts(),
            "absorbed_by_rule": {k: float(v) for k, v in sorted(w.result.by_rule.items()) if float(v) != 0.0},
            "absorbed_by_node": _largest(plan, w.call.graph, w.result.by_node),
            **(w.walks.stats if w.targets is not None else {}),
            **({"decomposed": dict(w.call.graph.decomposed)} if w.call.graph.decomposed else {}),
            **_scans(w),
        },
    )


def _scans(w: Walked) -> dict[str, Any]:
    """For a graph with state-space scans: how many selection operands it has and whether the rules held them."""
    found = len(w.call.model_trace.analysis.selection)
    return {"scan_selection": found, "selection": w.ruleset.selection} if found else {}


def _per_input(
    w: Walked, reached: dict[fx.Node, Any], lead: tuple, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Relevance per explainable input, by name; and the integer inputs it never reached, with why.

    A float input no rule sends relevance to gets zeros: what the rules assign it (a quotient's denominator, CP-LRP's
    queries and keys, an input the output does not depend on). An integer input reaches relevance only through a
    lookup (token ids); one read only as indices gets no entry rather than zeros that were never computed."""
    relevance, unreached = {}, {}
    for node in w.call.model_trace.analysis.explainable_inputs():
        name, r, v = w.call.graph.input_names[node], reached.get(node), w.call.value_of[node]
        if r is None and not v.is_floating_point():
            readers = sorted({op_name(user) for user in _readers(node)})
            unreached[name] = (
                f"an integer input read only as indices or counts ({', '.join(readers)}): relevance does not flow "
                "into them"
            )
            continue
        if r is None:
            r = torch.zeros((*lead, *v.shape), dtype=v.dtype, device=v.device)
        relevance[name] = _plain(r)
    return relevance, unreached


def _readers(node: fx.Node) -> list[fx.Node]:
    """The ops that read an input's values, looking through the ops that only select or move them (as their data)."""
    found, stack, seen = [], [node], set()
    while stack:
        value = stack.pop()
        for user in value.users:
            if user in seen:
                continue
            seen.add(user)
            if moves_values(user) and user.args and user.args[0] is value:
                stack.append(user)
            else:
                found.append(user)
    return found


def _largest(plan: Plan, graph: Graph, by_node: dict[fx.Node, Any], count: int = 10) -> list[dict[str, Any]]:
    """The `count` nodes whose rules kept (positive) or created (negative) the most relevance: where relevance that
    did not reach the inputs went, node by node."""
    if not by_node:
        return []
    nodes = list(by_node)
    amounts = torch.stack([torch.as_tensor(by_node[n]).reshape(()).cpu() for n in nodes]).tolist()
    ranked = sorted((pair for pair in zip(amounts, nodes, strict=True) if pair[0] != 0.0), key=lambda p: -abs(p[0]))
    return [
        {
            "node": node.name,
            "op": op_name(node),
            "module": graph.module_path(node) or "<model>",
            "rule": f"{plan.steps[node].op_class}:{plan.steps[node].choice.name}",
            "absorbed": amount,
        }
        for amount, node in ranked[:count]
    ]


def _own(output: torch.Tensor | DeferredOutput, value_of: dict[fx.Node, Any]) -> torch.Tensor | DeferredOutput:
    """The output as the explanation keeps it: never the caller's tensor itself (a model may return its input)."""
    if isinstance(output, DeferredOutput):
        return output
    caller = {  # a quantized weight (a wrapper subclass) has no storage of its own: its parts are never returned
        t.untyped_storage().data_ptr()
        for t in value_of.values()
        if isinstance(t, torch.Tensor) and not is_traceable_wrapper_subclass(t)
    }
    return output.clone() if output.untyped_storage().data_ptr() in caller else _plain(output)


def _per_sample(t: torch.Tensor | RowSparse, batch: int, lead: tuple = ()) -> torch.Tensor:
    """Sum per sample (the dim after `lead`), as float64; a tensor without a batch dim is shared evenly."""
    if isinstance(t, RowSparse):
        return t.sum_per(batch)
    dtype = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None
    t = t.detach()
    n = len(lead)
    if t.dim() > n and t.shape[n] == batch:
        return t.reshape(*lead, batch, -1).sum(-1, dtype=dtype).double()
    total = t.reshape(*lead, -1).sum(-1, dtype=dtype).double()
    return (total / batch).unsqueeze(-1).expand(*lead, batch)


def _latent(r: Any, shape: tuple, dtype: torch.dtype, device: torch.device, lead: tuple = ()) -> torch.Tensor:
    """Relevance recorded at a module's output (of this `shape`); zeros when none reached it."""
    if r is None:
        return torch.zeros((*lead, *shape), dtype=dtype, device=device)
    return _plain(r.dense() if isinstance(r, RowSparse) else r)


def _plain(t: Any) -> Any:
    """A normal tensor (not an inference tensor) the caller may use anywhere, autograd included."""
    if isinstance(t, torch.Tensor):
        return t.clone() if t.is_inference() else t
    if isinstance(t, list):
        return [_plain(x) for x in t]
    return t
