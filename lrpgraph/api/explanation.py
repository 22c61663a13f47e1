"""What `explain` returns: relevance per input, the output, and where the relevance went — and how it is
assembled from one walk."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx

from ..capture.call import without_autocast
from ..errors import InputError
from ..flow.positional import PositionalSource
from ..ops.sparse import RowSparse
from ..presets.ruleset import RuleSet
from ..propagate.plan import Plan
from ..propagate.schedule import Schedule
from ..propagate.store import ActivationStore
from ..propagate.walker import WalkResult
from .positional import positional_outputs
from .traced import TracedModel


@dataclass
class Conservation:
    """Where the seed's relevance went, per sample (dim 0) for inputs, in totals over the batch for the rest.

    `absorbed` holds what rules did not pass on: "bias" (biases and parameter terms of sums),
    "constants" (constant operands: masks, position tables, scalars), "rules" (stabilisers and
    non-conservative rules such as flat, z^B, alpha-beta) and "fallback" (explicit fallbacks); a result of
    `explain_many` holds its own sample's share, under "mixed" when its batch absorbed in several categories.
    """

    seed: torch.Tensor
    inputs: dict[str, torch.Tensor]
    absorbed: dict[str, float]
    positional: torch.Tensor | None = None  # signed relevance of positional encodings (PA-LRP), per sample

    @property
    def input_total(self) -> torch.Tensor:
        """Relevance that reached the inputs, per sample ([K, B] for K targets)."""
        return sum(self.inputs.values(), torch.zeros_like(self.seed))

    @property
    def accounted(self) -> torch.Tensor:
        """Relevance that reached inputs or positions, per sample."""
        return self.input_total if self.positional is None else self.input_total + self.positional

    @property
    def error(self) -> torch.Tensor:
        """seed − (inputs + positions) per sample, relative to |seed|: 0 for a conserving explanation."""
        return (self.seed - self.accounted) / self.seed.abs().clamp_min(1e-30)

    def where_it_went(self) -> dict[str, float]:
        """The seed's relevance split over where it ended, in totals over the batch (and targets): each input,
        "positions" (PA-LRP), and what rules absorbed ("bias", "constants", "rules", "fallback"); the parts
        sum to the seed. A preset that does not conserve by design shows it here, not as an error."""
        parts = {name: float(r.sum()) for name, r in self.inputs.items()}
        if self.positional is not None:
            parts["positions"] = float(self.positional.sum())
        parts.update({k: v for k, v in sorted(self.absorbed.items()) if v != 0.0})
        return parts

    def __repr__(self) -> str:
        inputs = ", ".join(f"{k}={v.sum().item():.6g}" for k, v in self.inputs.items())
        absorbed = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.absorbed.items()))
        positions = "" if self.positional is None else f"; positions: {self.positional.sum().item():.6g}"
        return (
            f"Conservation(seed={self.seed.sum().item():.6g}; inputs: {inputs}{positions}; "
            f"absorbed: {absorbed or 'none'})"
        )


class DeferredOutput:
    """An output not computed yet: a deferred head's full logits (`propagate/head.py`), made when first read from
    the head's input `x`, the model's head weights and the rows the explain computed (`rows`, written in as they
    were, so that the output holds exactly the logits the seed explains), in the model's dtypes as the explain.

    The weights are the model's own, not copies (an unread output keeps them alive). If they were changed in place,
    given new data, moved or cast before the output is read, reading it is an error rather than another model's
    output; a write through `.data` cannot be seen. (A module given a new weight object leaves these intact.)
    """

    def __init__(
        self,
        compute: Callable[..., torch.Tensor],
        x: torch.Tensor,
        weights: tuple[torch.Tensor | None, ...],
        rows: RowSparse,
        state: tuple | None = None,
    ):
        self.compute, self.x, self.weights, self.rows = compute, x, weights, rows
        self.state = state if state is not None else tuple(map(_weight_state, weights))

    def value(self) -> torch.Tensor:
        if tuple(map(_weight_state, self.weights)) != self.state:
            raise InputError(
                "the model's output head weights were changed, given new data, moved or cast since this explanation "
                "was made; its output, computed when first read, can no longer be: read `.output` before changing them"
            )
        with torch.inference_mode(False), torch.no_grad(), without_autocast():
            full = self.compute(self.x, *self.weights)
            flat = full.view(-1, full.shape[-1])
            flat.index_copy_(0, self.rows.index.to(full.device), self.rows.values.to(full.dtype))
        return full

    def __reduce__(self) -> tuple:
        """Pickled (and deep-copied) as its value: the copy cannot check the weights it would be computed from."""
        return torch.clone, (self.value(),)

    def sample(self, row: int, x: torch.Tensor) -> DeferredOutput:
        """Sample `row`'s output, made from `x`: its rows of this input [1, length, H], cut as the caller cuts it."""
        return DeferredOutput(self.compute, x, self.weights, self.rows.sample(row, x.shape[1]), self.state)


def _weight_state(w: torch.Tensor | None) -> tuple | None:
    """What must not change for a deferred output to be computed from `w`: where it is, what it holds, its version."""
    return None if w is None else (w.data_ptr(), w.dtype, w.device, tuple(w.shape), w._version)


class _Deferrable:
    """A dataclass field that may hold a DeferredOutput, replaced by its tensor when first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            raise AttributeError(self.slot)  # no class-level default: the field stays required
        value = obj.__dict__[self.slot]
        if isinstance(value, DeferredOutput):
            value = obj.__dict__[self.slot] = value.value()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


def raw_output(ex: Explanation) -> torch.Tensor | DeferredOutput:
    """An explanation's output as held: a tensor, or a DeferredOutput not computed yet."""
    return ex.__dict__["_output"]


@dataclass
class Explanation:
    """Relevance of every input (keyed by input name, shaped like the input; per token for ids).

    `output` is the explained output; a language model's logits over every position are computed when first
    read (the explain computes only the rows its seed needs, see `propagate/head.py`).
    """

    relevance: dict[str, torch.Tensor]
    output: torch.Tensor = _Deferrable()  # type: ignore[assignment]
    seed_relevance: Any  # the seed as given to the walk (kept compact when it is nonzero in a few rows)
    conservation: Conservation
    rules: str
    latent: dict[str, torch.Tensor] = field(default_factory=dict)
    # PA-LRP: relevance per position [B, T]; for an image, per patch [B, N] (row-major, class token rows dropped)
    positional: torch.Tensor | None = None
    # PA-LRP: (token + positional relevance) / its max |·| per sample [B, T]; for an image the authors' map
    # relu(Σ_channels R_pixels + R_patch/p² painted on its pixels) [B, H, W]
    combined: torch.Tensor | None = None
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> torch.Tensor:
        """The relevance placed on the output, as a dense tensor shaped like the output ([K, …] for K targets)."""
        seed = self.seed_relevance
        return seed.dense() if hasattr(seed, "dense") else seed

    def save(self, path: str | os.PathLike) -> Path:
        """Write this explanation to a .safetensors file that `lrpgraph.load` reads back (no pickle)."""
        from .saved import save

        return save(self, path)

    def show(self, tokens: Sequence[str] | None = None, sample: int = 0) -> Any:
        """Heatmap of one sample: HTML in a notebook, coloured text (or an image) in a terminal.

        tokens: the input's token strings (for token ids); without them tokens are shown by position.
        """
        from ..tools.viz import show  # the drawing lives with the other tools; the API only hands over

        return show(self, tokens, sample)

    def _repr_html_(self) -> str:
        """Notebooks display an explanation as the heatmap of its first sample."""
        from ..tools.viz import explanation_html

        return explanation_html(self)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.relevance.items())
        return f"Explanation(rules={self.rules!r}, relevance={{{shapes}}}, {self.conservation!r})"


@dataclass
class Walked:
    """What one explain call computed, from which its Explanation is assembled."""

    model_trace: TracedModel
    value_of: dict[fx.Node, Any]  # placeholder values of the call
    out: torch.Tensor | RowSparse  # the explained output (of a deferred head: the rows the seed reads)
    output: torch.Tensor | DeferredOutput  # the explained output as the explanation returns it
    seed: Any
    targets: int | None  # K for K targets walked at once
    result: WalkResult
    ruleset: RuleSet
    sources: list[PositionalSource]
    recorded: dict[str, fx.Node]


def assemble(w: Walked, plan: Plan, schedule: Schedule, store: ActivationStore, started: float) -> Explanation:
    """Relevance per input (zeros where none arrived), PA-LRP outputs, latent relevance, conservation, stats."""
    dtype, out = w.seed.dtype, w.out
    lead = () if w.targets is None else (w.targets,)
    graph = w.model_trace.graph
    relevance = {}
    for node in w.model_trace.analysis.explainable_inputs():
        r = w.result.inputs.get(node)
        if r is None:
            v = w.value_of[node]
            r = torch.zeros((*lead, *v.shape), dtype=v.dtype if v.is_floating_point() else dtype, device=v.device)
        relevance[graph.input_names[node]] = _plain(r)
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
        output=_own(w.output, w.value_of),
        seed_relevance=w.seed if isinstance(w.seed, RowSparse) else _plain(w.seed),
        conservation=conservation,
        rules=w.ruleset.name,
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
            "absorbed_by_rule": {k: float(v) for k, v in sorted(w.result.by_rule.items()) if float(v) != 0.0},
        },
    )


def _own(output: torch.Tensor | DeferredOutput, value_of: dict[fx.Node, Any]) -> torch.Tensor | DeferredOutput:
    """The output as the explanation keeps it: never the caller's tensor itself (a model may return its input)."""
    if isinstance(output, DeferredOutput):
        return output
    caller = {t.untyped_storage().data_ptr() for t in value_of.values() if isinstance(t, torch.Tensor)}
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
