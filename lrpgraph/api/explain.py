"""`explain`: trace (cached), plan the rules, run the forward once, walk the relevance back."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from ..capture.call import prepare_call, without_autocast
from ..capture.graph import Graph
from ..capture.shapes import Shapes
from ..errors import InputError
from ..flow.positional import PositionalSource
from ..ops.sparse import RowSparse
from ..presets.ruleset import RuleSet, resolve
from ..propagate.head import Head, deferred_head
from ..propagate.plan import Plan
from ..propagate.schedule import Schedule, byte_sizes
from ..propagate.store import ActivationStore
from ..propagate.walker import BatchedWalker, Walker, WalkResult
from .arguments import check_inputs, check_options, check_seed
from .explanation import DeferredOutput, Explanation, Walked, assemble
from .positional import select_sources
from .targets import Output, Target, contrast, last_positions, seed_rows, seeds
from .traced import TracedModel, traced


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
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> Explanation:
    """Explain `model(inputs)` with LRP computed per ATen op; the model is left exactly as it was. Autocast around
    the call does not apply: the model is traced and run in its own dtypes (`dtype=` sets the relevance's).

    inputs: a tensor, a tuple of positional inputs, or a dict / tokenizer output of keyword inputs.
    target: a class or token id (per sample: a 1-D tensor of ids; default: the predicted class), an
        index tuple into the output, a seed tensor shaped like the output, or a function of the
        output returning that seed; `lrpgraph.Targets([...])` or [batch, K] ids for K maps at once.
    rules: a preset name or file (see `lrpgraph.preset_names()`), a RuleSet, or a dict in preset form.
    output: which model output to explain, by name ("logits") or flat index (default: the first float one).
    record: module paths whose output relevance to return in `Explanation.latent`.
    fallback: None (an op without a rule is an error), "absorb" or "pass" (reported in `fallbacks`).
    memory_budget: bytes the activations held for the walk may take (recomputed beyond it).
    offload: keep activations in host memory (pinned, on CUDA) and fetch each when a rule reads it.
    dtype: the relevance's precision, e.g. torch.float32 for a bfloat16 model (default: the output's).
    contrastive: explain the target against the other classes (as the rule set says: one pass seeded with
        its unit relevance minus the mean of the others', or absLRP's Nmax(P − Q) of two normalised passes).
    strict: NaN or infinity in the inputs or the output is an error (False: a warning).
    cache_dir: keep traces on disk there for later processes (default: $LRPGRAPH_CACHE_DIR if set).
    tracer: "auto" (torch.export; a model it cannot trace is recorded per call instead, said once), "export"
        (an export failure is an error) or "record" (the ops this call runs, valid for this input only).
    """
    started = time.perf_counter()
    with without_autocast():
        check_options(memory_budget, offload, dtype, fallback, contrastive, strict, record)
        ruleset = resolve(rules)
        args, kwargs = prepare_call(model, inputs)
        check_inputs(model, args, kwargs, strict)
        model_trace = traced(model, args, kwargs, cache_dir, tracer).for_rules(ruleset)
        graph = model_trace.graph
        index = output_index(graph, output)
        recorded = record_nodes(graph, record)
        values = graph.placeholder_values(model, pytree.tree_leaves((args, kwargs)))
        value_of = dict(zip(graph.module.graph.find_nodes(op="placeholder"), values, strict=True))
        shapes = model_trace.shapes(values)
        sources = _positional_sources(model, model_trace, ruleset, value_of, shapes)
        plan = model_trace.plan(graph.outputs[index], ruleset, fallback, frozenset(s.node for s in sources))
        shape = torch.Size(shapes.of(graph.outputs[index]))
        positions = _last_positions(kwargs, shape)
        style = ruleset.seed_style(contrastive)
        rows = seed_rows(target, shape, positions, style)
        head = deferred_head(plan) if rows is not None else None
        schedule = plan.schedule(shapes, memory_budget, None if head is None else len(rows))
        store = ActivationStore(value_of, shapes, schedule.recipes, offload)
        out, output = run_forward(model_trace, schedule, store, values, index, head, rows)
        seed, k = seeds(target, out, positions, style)
        check_seed(seed, graph.output_names[index], strict)
        seed = seed if dtype is None else seed.to(dtype)
        per_walk = maps_per_walk(k, memory_budget, schedule.predicted_peak, plan, shapes, seed.dtype)
        result = walk(plan, schedule, store, seed, k, frozenset(recorded.values()), per_walk)
        if style == "passes":
            (result, seed), k = contrast(result, seed, out.shape[0]), None
        walked = Walked(model_trace, value_of, out, output, seed, k, result, ruleset, sources, recorded)
        ex = assemble(walked, plan, schedule, store, started)
        if k is not None:
            ex.stats.update(maps=k, maps_per_walk=min(per_walk, k), walks=-(-k // per_walk))
        return ex


def _positional_sources(
    model: torch.nn.Module, model_trace: TracedModel, ruleset: RuleSet, value_of: dict[fx.Node, Any], shapes: Shapes
) -> list[PositionalSource]:
    """PA-LRP's positional encodings for this call (none for other rule sets); warns when there are none."""
    if not ruleset.positional:
        return []
    sources = select_sources(model_trace.graph, model_trace.analysis.positional, value_of, shapes)
    if not sources:
        warnings.warn(
            f"rules '{ruleset.name}' give positions relevance, but no positional encoding was found in "
            f"{type(model).__name__}; positional relevance is zero",
            stacklevel=3,
        )
    return sources


def output_index(graph: Graph, output: str | int | None) -> int:
    """The flat index of the explained output: by name, by index, or the first floating-point tensor."""
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


def record_nodes(graph: Graph, paths: Iterable[str]) -> dict[str, fx.Node]:
    """{module path: the node holding that module's output} for `record=`."""
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


def run_forward(
    model_trace: TracedModel,
    schedule: Schedule,
    store: ActivationStore,
    values: list[Any],
    index: int,
    head: Head | None,
    rows: torch.Tensor | None,
) -> tuple[Output, torch.Tensor | DeferredOutput]:
    """(what the seed reads, the explained output): the output itself twice, or — with a deferred head and the
    `rows` the seed reads — the output at those rows and the full output deferred (`propagate/head.py`)."""
    if head is None:
        out = model_trace.forward(schedule.keep).run(values, store)[index]
        return out, out
    x = model_trace.forward(schedule.keep, (head.node, head.input)).run(values, store)[index]
    weight, bias = store.get(head.weight), None if head.bias is None else store.get(head.bias)
    shape = torch.Size((*x.shape[:-1], weight.shape[0]))
    with torch.inference_mode():
        out = RowSparse(rows.to(x.device), head.rows(x, rows, weight, bias), shape)
    if head.node in schedule.keep:
        store.put(head.node, out)
    return out, DeferredOutput(head.full, x.clone(), (weight, bias), out)


def _last_positions(kwargs: dict, shape: torch.Size) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask")
    if len(shape) == 3 and isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] == shape[1]:
        return last_positions(mask)
    return None


def maps_per_walk(k: int | None, budget: int | None, held: int, plan: Plan, shapes: Shapes, dtype: torch.dtype) -> int:
    """How many of K relevance maps one walk carries: all of them, or under a memory budget as many as fit
    beside the activations (`held` bytes) at about two dense maps of the plan's largest value each."""
    if k is None or budget is None:
        return k or 1
    size = byte_sizes(shapes)
    largest = max((size(n) // n.meta["val"].element_size() for n in plan.steps if _is_tensor(n)), default=1)
    per_map = 2 * largest * torch.empty((), dtype=dtype).element_size()
    return max(1, min(k, (budget - held) // max(per_map, 1)))


def walk(
    plan: Plan, schedule: Schedule, store: ActivationStore, seed: Any, k: int | None, record: frozenset, per_walk: int
) -> WalkResult:
    """One walk, or for K maps walks of `per_walk` maps over the same forward, joined along the maps."""
    if k is None:
        return Walker(plan, schedule, store, record).run(seed)
    if per_walk >= k:
        return BatchedWalker(plan, schedule, store, record).run(seed)
    parts, sizes = [], []
    for first in range(0, k, per_walk):
        walker = BatchedWalker(plan, schedule, store, record, retain=first + per_walk < k)
        parts.append(walker.run(_maps(seed, first, first + per_walk)))
        sizes.append(min(per_walk, k - first))
    return WalkResult(
        inputs=_joined([p.inputs for p in parts], sizes),
        latent=_joined([p.latent for p in parts], sizes),
        absorbed=_summed([p.absorbed for p in parts]),
        by_rule=_summed([p.by_rule for p in parts]),
    )


def _summed(books: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: sum(book.get(key, 0.0) for book in books) for key in {k for book in books for k in book}}


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def _maps(seed: Any, start: int, stop: int) -> Any:
    """Maps start..stop of a seed with K leading maps."""
    return seed.select_maps(start, stop) if isinstance(seed, RowSparse) else seed[start:stop]


def _joined(walks: list[dict[fx.Node, Any]], sizes: list[int]) -> dict[fx.Node, torch.Tensor]:
    """Each node's relevance from every walk, joined along the maps (zeros for a walk that sent none there)."""
    joined = {}
    for node in {n: None for w in walks for n in w}:
        dense = [p.dense() if isinstance(p, RowSparse) else p for p in (w.get(node) for w in walks)]
        like = next(p for p in dense if p is not None)
        joined[node] = torch.cat(
            [p if p is not None else like.new_zeros((n, *like.shape[1:])) for p, n in zip(dense, sizes, strict=True)]
        )
    return joined
