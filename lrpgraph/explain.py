"""`explain`: trace (cached), plan the rules, run the forward once, walk the relevance back."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from .analysis import analyse
from .errors import InputError
from .explanation import Conservation, Explanation
from .forward import run_forward
from .graph import Graph
from .plan import cached_plan
from .positional import combined, per_position, select_sources
from .ruleset import RuleSet, resolve
from .sparse import RowSparse
from .store import ActivationStore
from .target import Target, last_positions, seeds
from .tracer import prepare_call, trace
from .walker import walk


def explain(
    model: torch.nn.Module,
    inputs: Any,
    target: Target = None,
    rules: str | RuleSet | Mapping[str, Any] = "epsilon",
    *,
    output: str | int | None = None,
    record: Iterable[str] = (),
    fallback: str | None = None,
    memory_budget: int | None = None,
    offload: bool = False,
    dtype: torch.dtype | None = None,
    contrastive: bool = False,
) -> Explanation:
    """Explain `model(inputs)` with LRP computed per ATen op.

    inputs: a tensor, a tuple of positional inputs, or a dict / tokenizer output of keyword inputs.
    target: a class or token id (per sample: a 1-D tensor of ids; default: the predicted class), an
        index tuple into the output, a seed tensor shaped like the output, or a function of the
        output returning that seed.
    rules: a preset name or file (see `lrpgraph.preset_names()`), a RuleSet, or a dict in preset form.
    output: which model output to explain, by name ("logits", "last_hidden_state") or flat index;
        default: the first floating-point tensor output.
    record: module paths whose output relevance to return in `Explanation.latent`.
    fallback: None (an op without a rule is an error), "absorb" or "pass"; nodes that used it are
        listed in `Explanation.fallbacks`.
    memory_budget: bytes the activations held for the walk may take; the forward then keeps only
        checkpoints and the walk recomputes the rest (None: keep what the rules read).
    offload: keep activations in host memory (pinned, on CUDA) and fetch each when a rule reads it.
    dtype: the relevance's precision, e.g. torch.float32 for a bfloat16 model (default: the output's).
    contrastive: seed the target's unit relevance minus the mean of the other classes' (absLRP's seed;
        for any preset) instead of the target's output value.

    Several targets at once: `lrpgraph.Targets([...])`, or a [batch, K] tensor of ids; relevance
    then has a leading dimension K, and the K maps share the forward pass and every activation.

    The model is traced in eval mode; its parameters, buffers, hooks, train/eval flags and `.grad`
    are left as they were. No autograd graph is built.
    """
    started = time.perf_counter()
    ruleset = resolve(rules)
    args, kwargs = prepare_call(model, inputs)
    graph = trace(model, inputs)
    analysis = analyse(graph)
    index = _output_index(graph, output)
    out_node = graph.outputs[index]
    recorded = _record_nodes(graph, record)
    values = graph.placeholder_values(model, pytree.tree_leaves((args, kwargs)))
    placeholders = list(graph.module.graph.find_nodes(op="placeholder"))
    value_of = dict(zip(placeholders, values, strict=True))
    sources = select_sources(graph, analysis.positional, value_of) if ruleset.positional else []
    if ruleset.positional and not sources:
        warnings.warn(
            f"rules '{ruleset.name}' give positions relevance, but no positional encoding was found in "
            f"{type(model).__name__}; positional relevance is zero",
            stacklevel=2,
        )
    plan = cached_plan(graph, analysis, out_node, ruleset, fallback, frozenset(s.node for s in sources))
    schedule = plan.schedule(memory_budget)
    store = ActivationStore(value_of, schedule.recipes, offload)
    outputs = run_forward(graph, values, schedule.keep, store)
    out = outputs[index]
    seed, k = seeds(target, out, _positions(kwargs, out), contrastive)
    if dtype is not None:
        seed = seed.to(dtype)
    relevance_dtype = seed.dtype
    result = walk(plan, schedule, store, seed, frozenset(recorded.values()), targets=k)
    lead = () if k is None else (k,)
    relevance = _input_relevance(
        graph, analysis.explainable_inputs(), result.inputs, values, placeholders, relevance_dtype, lead
    )
    batch = out.shape[0] if out.dim() else 1
    positional = signed = mixed = None
    if ruleset.positional:
        positional, signed, mixed = _positional_outputs(
            sources, result.inputs, ruleset.positional, lead, relevance, batch, relevance_dtype, out.device
        )
    conservation = Conservation(
        seed=_per_sample(seed, batch, lead),
        inputs={name: _per_sample(r, batch, lead) for name, r in relevance.items()},
        absorbed={k: float(v) for k, v in result.absorbed.items()},
        positional=None if signed is None else signed.double(),
    )
    latent = {
        path: _latent(result.latent.get(node), node, relevance_dtype, out.device, lead)
        for path, node in recorded.items()
    }
    return Explanation(
        relevance=relevance,
        output=_plain(out),
        seed_relevance=seed if isinstance(seed, RowSparse) else _plain(seed),
        conservation=conservation,
        rules=ruleset.name,
        latent=latent,
        positional=positional,
        combined=mixed,
        fallbacks=plan.fallbacks,
        stats={
            "seconds": time.perf_counter() - started,
            "peak_activation_bytes": store.peak_bytes,
            "kept_nodes": len(schedule.keep),
            "checkpoints": len(schedule.checkpoints),
            "recomputed_nodes": store.recomputed_nodes,
            "recompute_seconds": store.recompute_seconds,
            "offloaded_bytes": store.offloaded_bytes,
            "nodes": len(plan.steps),
            "rules": plan.rule_counts(),
        },
    )


def _positional_outputs(sources, reached, mode, lead, relevance, batch, dtype, device):
    """PA-LRP's (positional, its signed total per sample, combined): one [*lead, B, T] tensor per sequence,
    matched to the inputs by length; dicts keyed by input name when an encoder-decoder has two lengths."""
    by_length = per_position(sources, reached, mode, len(lead))
    signed_by_length = per_position(sources, reached, "signed", len(lead))
    sequences = {r.shape[len(lead) + 1]: n for n, r in relevance.items() if r.dim() > len(lead) + 1}
    if not by_length:  # no positional encoding found: zeros for the first sequence
        length = next(iter(sequences), 1)
        zeros = torch.zeros((*lead, batch, length), dtype=dtype, device=device)
        by_length, signed_by_length = {length: zeros}, {length: zeros}
    signed = sum(t.sum(-1) for t in signed_by_length.values())
    if len(by_length) == 1:
        ((length, positional),) = by_length.items()
        name = sequences.get(length)
        mixed = combined(relevance[name], positional) if name is not None else None
        return positional, signed, mixed
    named = {sequences.get(length, f"length_{length}"): t for length, t in by_length.items()}
    mixed = {n: combined(relevance[n], t) for n, t in named.items() if n in relevance}
    return named, signed, mixed


def _output_index(graph: Graph, output: str | int | None) -> int:
    candidates = [
        i
        for i, node in enumerate(graph.outputs)
        if isinstance(node, fx.Node)
        and isinstance(node.meta.get("val"), torch.Tensor)
        and node.meta["val"].is_floating_point()
    ]
    if output is None:
        if not candidates:
            raise InputError("the model has no floating-point tensor output to explain")
        return candidates[0]
    if isinstance(output, int) and not isinstance(output, bool):
        if output in candidates:
            return output
    elif output in graph.output_names:
        index = graph.output_names.index(output)
        if index in candidates:
            return index
    names = ", ".join(graph.output_names[i] for i in candidates)
    raise InputError(f"no floating-point output {output!r}; the model's outputs are: {names}")


def _record_nodes(graph: Graph, paths: Iterable[str]) -> dict[str, fx.Node]:
    if isinstance(paths, str):
        paths = [paths]
    found = {}
    for path in paths:
        node = module_output(graph, path)
        if node is None:
            raise InputError(f"'{path}' is not a module that computes a tensor in the traced model")
        found[path] = node
    return found


def module_output(graph: Graph, path: str) -> fx.Node | None:
    """The node holding a module's output: its last node whose value is used outside the module."""
    inside = [
        n
        for n in graph.module.graph.nodes
        if n.op == "call_function" and any(p == path for p, _ in graph.module_stack(n))
    ]
    leaving = [
        n
        for n in inside
        if isinstance(n.meta.get("val"), torch.Tensor)
        and n.meta["val"].is_floating_point()
        and any(u.op == "output" or not any(p == path for p, _ in graph.module_stack(u)) for u in n.users)
    ]
    return leaving[-1] if leaving else None


def _positions(kwargs: dict, out: torch.Tensor) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask")
    if out.dim() == 3 and isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == out.shape[1]:
        return last_positions(mask)
    return None


def _input_relevance(
    graph: Graph,
    inputs: list[fx.Node],
    reached: dict,
    values: list,
    placeholders: list,
    dtype: torch.dtype,
    lead: tuple = (),
) -> dict[str, torch.Tensor]:
    """Relevance per explainable input, zeros where none arrived; ids get float relevance per token."""
    value_of = dict(zip(placeholders, values, strict=True))
    relevance = {}
    for node in inputs:
        r = reached.get(node)
        if r is None:
            v = value_of[node]
            r = torch.zeros((*lead, *v.shape), dtype=v.dtype if v.is_floating_point() else dtype, device=v.device)
        relevance[graph.input_names[node]] = _plain(r)
    return relevance


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


def _latent(r: Any, node: fx.Node, dtype: torch.dtype, device: torch.device, lead: tuple = ()) -> torch.Tensor:
    """Relevance recorded at a module's output; zeros when none reached it."""
    if r is None:
        val = node.meta["val"]
        return torch.zeros((*lead, *val.shape), dtype=dtype, device=device)
    return _plain(r.dense() if isinstance(r, RowSparse) else r)


def _plain(t: Any) -> Any:
    """A normal tensor (not an inference tensor) the caller may use anywhere, autograd included."""
    if isinstance(t, torch.Tensor):
        return t.clone() if t.is_inference() else t
    if isinstance(t, list):
        return [_plain(x) for x in t]
    return t
