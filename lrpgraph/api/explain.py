"""`explain`: trace (cached), plan the rules, run the forward once, make the seed, walk the relevance back."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from ..capture.call import prepare_call, without_autocast
from ..engine.bound_call import BoundCall
from ..engine.conditions import Condition, conditional
from ..engine.contrast import contrast
from ..engine.non_finite import first_non_finite
from ..engine.output import ForwardPass, output_index
from ..engine.positional import positional_sources
from ..engine.traced import traced
from ..engine.walks import Walks
from ..errors import InputError
from ..presets.ruleset import RuleSet, resolve
from ..propagate.replay import modified_gradients
from .arguments import (
    check_conditions,
    check_inputs,
    check_options,
    check_relevance,
    check_seed,
    condition_masks,
    record_nodes,
)
from .assemble import Walked, assemble
from .explanation import Explanation
from .targets import Target, last_real_positions, seed_rows, seeds


def explain(
    model: torch.nn.Module,
    inputs: Any,
    target: Target = None,
    rules: str | RuleSet | Mapping[str, Any] = "epsilon",
    *,
    output: str | int | None = None,
    record: Iterable[str] = (),
    conditions: Mapping[str, Sequence[Condition]] | None = None,
    rho: bool = False,
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
    output: which model output to explain, by name ("logits") or flat index (default: the first float one
        computed from the inputs).
    record: points whose relevance to return in `Explanation.latent`: module paths (their output), a module path
        with ":input" (the value it is called on: a layer's residual stream, the heads before an output
        projection, the hidden neurons before an MLP's down projection), or node names of the traced graph.
    conditions: {point: [condition, …]} conditional relevance (CRP): each condition keeps the relevance of some
        units at the point (unit indices along its channels, or the last dim; or a float mask of its shape per
        sample) and follows what passes through them to the inputs, in `Explanation.conditional` [K, …]; the
        points are recorded too, and conditions at several points apply in turn.
    rho: also return, at each recorded point, the modified gradient ρ the walk carries there (R = a ⊙ ρ, defined
        where a is 0 too) in `Explanation.rho`, from the replay of `verify` (a forward and a backward more).
    fallback: None (an op without a rule is an error), "absorb" or "pass" (reported in `fallbacks`).
    memory_budget: bytes the activations held for the walk may take (recomputed beyond it).
    offload: keep activations in host memory (pinned, on CUDA) and fetch each when a rule reads it.
    dtype: the relevance's precision, e.g. torch.float32 for a bfloat16 model (default: the output's).
    contrastive: explain the target against the other classes (as the rule set says: one pass seeded with
        its unit relevance minus the mean of the others', or absLRP's Nmax(P − Q) of two normalised passes).
    strict: NaN or infinity in the inputs, the output or the relevance reaching the inputs is an error (False: a
        warning).
    cache_dir: keep traces on disk there for later processes (default: $LRPGRAPH_CACHE_DIR if set).
    tracer: "auto" (torch.export; a model it cannot trace is recorded per call instead, said once), "export"
        (an export failure is an error) or "record" (the ops this call runs, valid for this input only).
    """
    started = time.perf_counter()
    with without_autocast():
        check_options(memory_budget, offload, dtype, fallback, contrastive, strict, record)
        record = [record] if isinstance(record, str) else list(record)
        conditions = check_conditions(conditions, target, contrastive)
        if not isinstance(rho, bool) or (rho and not record):
            raise InputError(f"rho=True returns ρ at recorded points: pass record= as well (rho={rho!r})")
        record += [point for point in conditions if point not in record]
        ruleset = resolve(rules)
        args, kwargs = prepare_call(model, inputs)
        check_inputs(model, args, kwargs, strict)
        call = BoundCall(traced(model, args, kwargs, cache_dir, tracer).for_rules(ruleset), model, args, kwargs)
        index, recorded = output_index(call.graph, output), record_nodes(call.graph, record)
        sources = positional_sources(call, ruleset, model)
        plan = call.model_trace.plan(call.graph.outputs[index], ruleset, fallback, frozenset(s.node for s in sources))
        shape, style = call.shape(plan.output), ruleset.seed_style(contrastive)
        positions = last_real_positions(kwargs, shape)
        rows = seed_rows(target, shape, positions, style)
        forward = ForwardPass(call, plan, rows, memory_budget, offload)
        seed, k = seeds(target, forward.run(index), positions, style)
        check_seed(seed, call.graph.output_names[index], strict)
        seed = seed if dtype is None else seed.to(dtype)
        points = condition_masks(conditions, recorded, plan, call, seed.dtype)
        walks = Walks(plan, forward, frozenset(recorded.values()))
        result = walks.run(seed, k, memory_budget, retain=bool(points))
        check_relevance(result.inputs, strict, lambda: first_non_finite(call, plan, rows, index, seed, k is not None))
        if style == "passes":
            (result, seed), k = contrast(result, seed, forward.out.shape[0]), None
        walked = Walked(call, plan, forward, walks, seed, k, result, ruleset, sources, recorded)
        if points:
            walked.conditional = conditional(plan, forward, points, result.latent)
            walked.conditions = len(next(iter(points.values())))
        if rho:
            walked.rho = modified_gradients(plan, call.value_of, seed, recorded)
        return assemble(walked, started)
