"""`explain_similarity`: BiLRP — which tokens of one input match which tokens of the other.

A similarity of two embeddings y = ⟨φ(a), φ(b)⟩ (or its cosine, the norms held constant) is second order in the
inputs; BiLRP (Eberle et al., TPAMI 2022; Vasileiou & Eberle, NAACL 2024) explains it pair by pair:
R_ij = Σ_m R_i(φ_m; a)·R_j(φ_m; b), each factor first-order LRP of embedding dimension m onto position i of a
(j of b). The D first-order maps of a side are one linear map from seeds to positions (for rules linear in R), so
they are computed as T rows of it by a transposed walk where a side has fewer positions T than dimensions D, and as
D maps of one batched walk otherwise (or when a rule normalises R, or under a memory budget).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import fx

from ..capture.call import prepare_call, without_autocast
from ..engine.bound_call import BoundCall
from ..engine.output import ForwardPass, output_index
from ..engine.positional import positional_sources
from ..engine.traced import traced
from ..engine.walks import Walks
from ..errors import InputError
from ..presets.ruleset import RuleSet, resolve
from ..propagate.transposed import TransposedWalker
from .arguments import check_inputs, check_options, check_relevance
from .seeds import mean_pool
from .similarity_result import SimilarityExplanation
from .wrappers import is_sentence_transformer, sentence_embedding, sentence_features, tokens_of

Embed = Callable[[torch.Tensor, Any], torch.Tensor]
SIMILARITIES = ("cosine", "dot")


def explain_similarity(
    model: torch.nn.Module,
    a: Any,
    b: Any,
    *,
    similarity: str = "cosine",
    embed: Embed | None = None,
    rules: str | RuleSet | Mapping[str, Any] = "attnlrp",
    input: str | None = None,
    output: str | int | None = None,
    fallback: str | None = None,
    memory_budget: int | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> SimilarityExplanation:
    """Explain the similarity of each pair (a[p], b[p]) of embeddings token pair by token pair (BiLRP).

    a, b: the two sides' inputs, as `explain` takes them (a tokenizer output, a tensor, ...), with the same batch:
        row p of a is compared with row p of b. For a sentence-transformers model, texts (its own tokenizer and
        modules give the embedding).
    similarity: "cosine" (the norms held constant, as the papers do) or "dot".
    embed: `embed(output, inputs) -> [batch, D]`, a function linear in the explained output (a pooling: CLS,
        last token, a weighted mean). Default: a [batch, D] output is the embedding; token states (a HuggingFace
        encoder's `last_hidden_state`) are mean-pooled over the inputs' attention mask, as sentence-transformers do.
    input: which input's positions the pairs are between (default: the first the relevance reaches, e.g.
        input_ids); relevance over its features (dims after the position) is summed.
    The other options are `explain`'s.
    """
    started = time.perf_counter()
    if is_sentence_transformer(model):  # its own tokenizer and modules (pooling, normalise, dense): strings welcome
        a, b = (sentence_features(model, x) if isinstance(x, (str, list, tuple)) else x for x in (a, b))
        found = explain_similarity(
            sentence_embedding(model), a, b, similarity=similarity, embed=embed, rules=rules, input=input,
            output=output, fallback=fallback, memory_budget=memory_budget, dtype=dtype, strict=strict,
            cache_dir=cache_dir, tracer=tracer,
        )  # fmt: skip
        found.tokens_a, found.tokens_b = tokens_of(model, a), tokens_of(model, b)
        return found
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be one of {', '.join(SIMILARITIES)}, not {similarity!r}")
    if embed is not None and not callable(embed):
        raise InputError(f"embed must be a function (output, inputs) -> [batch, D] embeddings, not {embed!r}")
    with without_autocast():
        check_options(memory_budget, False, dtype, fallback, False, strict, ())
        ruleset = resolve(rules)
        options = {
            "ruleset": ruleset,
            "output": output,
            "fallback": fallback,
            "memory_budget": memory_budget,
            "dtype": dtype,
            "strict": strict,
            "cache_dir": cache_dir,
            "tracer": tracer,
        }
        sides = [_Side(model, a, "a", embed, options), _Side(model, b, "b", embed, options)]
        if sides[0].batch != sides[1].batch:
            raise InputError(
                f"a and b must hold the same number of inputs (row p of a is compared with row p of b): "
                f"a has {sides[0].batch}, b has {sides[1].batch}"
            )
        if sides[0].dim != sides[1].dim:
            raise InputError(f"a's embeddings have {sides[0].dim} dimensions and b's {sides[1].dim}: not comparable")
        maps = [side.maps(input, memory_budget) for side in sides]
        for side, m in zip(sides, maps, strict=True):
            check_relevance({side.input_node: m}, strict, lambda: "")
    ea, eb = (side.embedding.to(maps[0].dtype) for side in sides)
    scale = torch.ones_like(ea[:, 0])
    if similarity == "cosine":
        scale = 1 / (ea.norm(dim=-1) * eb.norm(dim=-1))
    value = (ea * eb).sum(-1) * scale
    interactions = torch.einsum("pim,pjm->pij", maps[0], maps[1]) * scale[:, None, None]
    return SimilarityExplanation(
        interactions=interactions,
        relevance_a=torch.einsum("pim,pm->pi", maps[0], eb) * (scale / 2)[:, None],
        relevance_b=torch.einsum("pjm,pm->pj", maps[1], ea) * (scale / 2)[:, None],
        similarity=value,
        kind=similarity,
        rules=ruleset.name,
        maps_a=maps[0],
        maps_b=maps[1],
        embeddings_a=ea,
        embeddings_b=eb,
        mask_a=sides[0].mask,
        mask_b=sides[1].mask,
        input=sides[0].input_name,
        stats={
            "seconds": time.perf_counter() - started,
            "a": sides[0].stats,
            "b": sides[1].stats,
        },
    )


class _Side:
    """One side of the pairs: its traced call, its forward and embedding, then its first-order maps [B, T, D]."""

    def __init__(self, model: torch.nn.Module, inputs: Any, name: str, embed: Embed | None, options: dict):
        args, kwargs = prepare_call(model, inputs)
        check_inputs(model, args, kwargs, options["strict"])
        ruleset, self.inputs, self.name = options["ruleset"], inputs, name
        model_trace = traced(model, args, kwargs, options["cache_dir"], options["tracer"]).for_rules(ruleset)
        self.call = call = BoundCall(model_trace, model, args, kwargs)
        output = options["output"]
        if output is None and embed is None and "last_hidden_state" in call.graph.output_names:
            output = "last_hidden_state"
        self.index = output_index(call.graph, output)
        node = call.graph.outputs[self.index]
        self.pool = (
            embed if embed is not None else self._default_pool(call.graph.output_names[self.index], node, kwargs)
        )
        sources = frozenset(s.node for s in positional_sources(call, ruleset, model))
        self.plan = model_trace.plan(node, ruleset, options["fallback"], sources)
        self.forward = ForwardPass(call, self.plan, None, options["memory_budget"], False)
        out = self.forward.run(self.index)
        self.out = out.to(options["dtype"] or out.dtype)
        self.embedding = self._embedded()
        self.batch, self.dim = self.embedding.shape
        self.mask = None if kwargs.get("attention_mask") is None else kwargs["attention_mask"].bool()
        self.stats: dict[str, Any] = {}

    def _default_pool(self, output_name: str, node: fx.Node, kwargs: dict) -> Embed:
        shape = tuple(self.call.shape(node))
        if len(shape) == 2:
            return lambda out, inputs: out
        if len(shape) == 3 and isinstance(kwargs.get("attention_mask"), torch.Tensor):
            mask = kwargs["attention_mask"]
            return lambda out, inputs: mean_pool(out, mask)
        if len(shape) == 3:
            raise InputError(
                f"{self.name}: mean pooling token states {shape} needs the inputs' attention_mask; pass one, or "
                "embed= a pooling function (output, inputs) -> [batch, D]"
            )
        raise InputError(
            f"{self.name}: the model's output '{output_name}' {shape} is neither an embedding [batch, D] nor token "
            "states [batch, tokens, features]; pick another with output=, or pass embed="
        )

    def _embedded(self) -> torch.Tensor:
        """φ = pool(output), checked to be [batch, D] and linear in the output (so its seeds sum to it)."""
        out = self.out
        embedding, along = torch.func.jvp(self._pooled, (out,), (out,))
        if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2 or embedding.shape[0] != out.shape[0]:
            shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise InputError(
                f"{self.name}: the embedding must be [batch, D] with the output's batch of {out.shape[0]}, got {shape}"
            )
        tolerance = 1e-4 if embedding.dtype != torch.float64 else 1e-10
        if not torch.allclose(along, embedding, rtol=tolerance, atol=tolerance * float(embedding.abs().max())):
            raise InputError(
                f"{self.name}: embed must be linear in the model's output (a pooling: a mean, the CLS row, the last "
                "token), so that each dimension's relevance sums to it; this one is not (normalise in the similarity, "
                "not in embed: similarity='cosine')"
            )
        return embedding.detach()

    def _pooled(self, out: torch.Tensor) -> torch.Tensor:
        return self.pool(out, self.inputs)

    def maps(self, input: str | None, budget: int | None) -> torch.Tensor:
        """R_i(φ_m) for every position i of the explained input and dimension m: [B, T, D]."""
        out, plan, forward = self.out, self.plan, self.forward
        self.input_node, self.input_name = _explained_input(self.call, plan, input)
        shape = tuple(self.call.shape(self.input_node))
        positions = shape[1] if len(shape) > 1 else 1
        walker = TransposedWalker(plan, forward.schedule, forward.store)
        if budget is None and walker.linear() and positions < self.dim:
            covectors = torch.zeros((positions, *shape), dtype=out.dtype, device=out.device)
            for t in range(positions):
                covectors[t, :, t] = 1
            back = walker.run_transposed({self.input_node: covectors}, self.batch)
            maps = out.new_zeros((self.batch, positions, self.dim))
            if back is not None:
                _, tangents = torch.func.vmap(lambda w: torch.func.jvp(self._pooled, (out,), (w * out,)))(back)
                maps = tangents.permute(1, 0, 2)
            self.stats = {"route": "transposed", "walks": 1, "maps": positions}
        else:
            _, pullback = torch.func.vjp(self._pooled, out)
            picks = torch.eye(self.dim, dtype=out.dtype, device=out.device)[:, None, :].expand(-1, self.batch, -1)
            (jacobian,) = torch.func.vmap(pullback)(picks)
            walks = Walks(plan, forward, frozenset())
            reached = walks.run(jacobian * out, self.dim, budget).inputs.get(self.input_node)
            maps = out.new_zeros((self.batch, positions, self.dim))
            if reached is not None:
                maps = reached.reshape(self.dim, self.batch, positions, -1).sum(-1).permute(1, 2, 0)
            self.stats = {"route": "seeds", **walks.stats}
        return maps.contiguous()


def _explained_input(call: BoundCall, plan: Any, name: str | None) -> tuple[fx.Node, str]:
    """The input whose positions the pairs are between: by name, or the first the walk reaches."""
    graph = call.graph
    reached = [n for n in call.model_trace.analysis.explainable_inputs() if n in plan.order]
    names = {graph.input_names[n]: n for n in reached}
    if name is None:
        if not reached:
            raise InputError("no input of the model receives relevance from its output: nothing to explain")
        node = reached[0]
        return node, graph.input_names[node]
    if name not in names:
        raise InputError(f"input={name!r} is not an input the relevance reaches; those are: {', '.join(names)}")
    return names[name], name
