"""What `explain` returns: relevance per input, the output, and where the relevance went; and `load`, which reads
back what `Explanation.save` wrote (`explanation_file.py`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine.conditions import unit_dim
from ..engine.output import DeferredOutput
from ..errors import InputError
from ..viz import explanation_html, show
from .explanation_file import FORMAT, read, read_file, write
from .similarity_result import FORMAT as SIMILARITY
from .similarity_result import SimilarityExplanation
from .similarity_result import read as read_similarity


@dataclass
class Conservation:
    """Where the seed's relevance went, per sample (dim 0) for inputs, in totals over the batch for the rest.

    `absorbed` holds what rules did not pass on: "bias" (biases and parameter terms of sums),
    "constants" (constant operands: masks, position tables, scalars), "rules" (stabilizers and
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
    # conditions=: each input's relevance per condition [K, …], only what passed through the conditioned units
    conditional: dict[str, torch.Tensor] = field(default_factory=dict)
    # rho=True: the modified gradient ρ at each recorded point (latent = activation ⊙ ρ)
    rho: dict[str, torch.Tensor] = field(default_factory=dict)
    # PA-LRP: relevance per position [B, T]; for an image, per patch [B, N] (row-major, class token rows dropped)
    positional: torch.Tensor | None = None
    # PA-LRP: (token + positional relevance) / its max |·| per sample [B, T]; for an image the authors' map
    # relu(Σ_channels R_pixels + R_patch/p² painted on its pixels) [B, H, W]
    combined: torch.Tensor | None = None
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    # integer inputs relevance cannot reach (read only as indices: a graph's edge_index), with why: they have no
    # entry in `relevance` rather than zeros that were never computed
    unreached: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    tokens: list[list[str]] | None = None  # each sample's tokens, where a pipeline or tokenizer made them
    target_names: list[str] = field(default_factory=list)  # what each sample (or each of K maps) explains, by name

    @property
    def seed(self) -> torch.Tensor:
        """The relevance placed on the output, as a dense tensor shaped like the output ([K, …] for K targets)."""
        seed = self.seed_relevance
        return seed.dense() if hasattr(seed, "dense") else seed

    def concepts(self, point: str, top: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """The `top` units of a recorded point carrying the most relevance, per sample: (unit indices [B, top],
        their relevance [B, top]), strongest first. Units are channels of a feature map [B, C, H, W], otherwise
        the last dim (features of [B, T, H], neurons of [B, H]); each unit's relevance is summed over the rest."""
        if point not in self.latent:
            raise InputError(f"{point!r} was not recorded; recorded: {', '.join(self.latent) or 'nothing'}")
        R = self.latent[point]
        per_unit = R.movedim(1 + unit_dim(R.shape[1:]), -1).reshape(R.shape[0], -1, R.shape[1 + unit_dim(R.shape[1:])])
        values, index = per_unit.sum(1).topk(min(top, per_unit.shape[-1]), dim=-1)
        return index, values

    def save(self, path: str | os.PathLike) -> Path:
        """Write this explanation to a .safetensors file that `lrpgraph.load` reads back (no pickle)."""
        return write(self, path)

    def show(self, tokens: Sequence[str] | None = None, sample: int = 0) -> Any:
        """Heatmap of one sample: HTML in a notebook, coloured text (or an image) in a terminal.

        tokens: the input's token strings (for token ids); without them tokens are shown by position.
        """
        if tokens is None and self.tokens is not None and sample < len(self.tokens):
            tokens = self.tokens[sample]
        return show(self, tokens, sample)

    def _repr_html_(self) -> str:
        """Notebooks display an explanation as the heatmap of its first sample."""
        return explanation_html(self)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.relevance.items())
        unreached = f", unreached={sorted(self.unreached)}" if self.unreached else ""
        return f"Explanation(rules={self.rules!r}, relevance={{{shapes}}}{unreached}, {self.conservation!r})"


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Explanation | SimilarityExplanation:
    """An Explanation written by `Explanation.save` (or a SimilarityExplanation by its `save`), tensors on `device`."""
    meta, tensors, where = read_file(path, device)
    if meta.get("format") == SIMILARITY:
        return read_similarity(meta, tensors, where)
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{where} is in format {meta.get('format')!r}; this lrpgraph reads {FORMAT!r} and {SIMILARITY!r}"
        )
    fields, conservation = read(meta, tensors, where)
    return Explanation(**fields, conservation=Conservation(**conservation))
