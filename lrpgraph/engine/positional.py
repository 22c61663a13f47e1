"""PA-LRP's outputs: which positional encodings take relevance, and relevance per position.

The graph pass (flow/positional.py) finds the candidates; here table lookups are kept only where
their ids are positions (not all alike; user inputs only when named position ids), and the relevance
the walk leaves at each source is summed to one value per (sample, position).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx

from ..caller import warn
from ..capture.graph import INPUT, Graph
from ..capture.shapes import Shapes
from ..flow.positional import PositionalSource
from ..presets.ruleset import RuleSet
from ..propagate.recompute import Recipes
from ..propagate.schedule import recipe_for
from ..propagate.store import ActivationStore
from .bound_call import BoundCall


def positional_sources(call: BoundCall, ruleset: RuleSet, model: torch.nn.Module) -> list[PositionalSource]:
    """PA-LRP's positional encodings for this call (none for other rule sets); warns when there are none."""
    if not ruleset.positional:
        return []
    sources = _select_sources(call.graph, call.model_trace.analysis.positional, call.value_of, call.shapes)
    if not sources:
        warn(
            f"rules '{ruleset.name}' give positions relevance, but no positional encoding was found in "
            f"{type(model).__name__}; positional relevance is zero"
        )
    return sources


def _select_sources(
    graph: Graph, candidates: list[PositionalSource], value_of: dict[fx.Node, Any], shapes: Shapes
) -> list[PositionalSource]:
    """The candidates that are positional: computed rotary factors and tables, and lookups by position ids."""
    return [s for s in candidates if s.ids is None or _are_positions(graph, s.ids, value_of, shapes)]


def _are_positions(graph: Graph, ids: fx.Node, value_of: dict[fx.Node, Any], shapes: Shapes) -> bool:
    if ids.op == "placeholder" and graph.kinds.get(ids) == INPUT:
        return "position" in graph.input_names.get(ids, "")
    recipe = recipe_for(ids, set(), None, cheap_only=False)
    if recipe is None:
        return False
    value = ActivationStore(value_of, shapes, Recipes({ids: recipe})).get(ids)
    if not isinstance(value, torch.Tensor) or value.numel() < 2:
        return False
    return bool((value != value.reshape(-1)[0]).any())  # positions differ; token-type ids are all alike


def per_position(
    sources: list[PositionalSource], reached: dict[fx.Node, Any], mode: str, lead: int
) -> dict[int, torch.Tensor]:
    """{sequence length: [*lead, B, T]}: additive sources signed; rotary sources summed per layer and factor
    (q's and k's relevance to one layer's cos added), then |·| (mode "abs", as the authors' code does) or signed.
    Sources are grouped by the length of their position axis (an encoder-decoder has two)."""
    groups: dict[tuple, torch.Tensor] = {}
    for index, source in enumerate(sources):
        R = reached.get(source.node)
        if R is None:
            continue
        axis = source.axis + lead
        dims = [d for d in range(R.dim()) if d not in (*range(lead), lead, axis)]
        values = R.sum(dim=dims) if dims else R
        key = (values.shape[-1], source.kind, source.group or index)
        groups[key] = values if key not in groups else groups[key] + values
    totals: dict[int, torch.Tensor] = {}
    for (length, kind, _), values in groups.items():
        if mode == "abs" and kind == "rotary":
            values = values.abs()
        totals[length] = values if length not in totals else totals[length] + values
    return totals


def paint(per_patch: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """Per-patch values [..., N] (row-major) painted on their patch × patch pixels: [..., H, W]."""
    grid = per_patch.reshape(*per_patch.shape[:-1], height // patch, width // patch)
    return grid.repeat_interleave(patch, -2).repeat_interleave(patch, -1)


def _on_image(positional: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(positional relevance per patch, class and distillation token rows dropped; PA-LRP's image map
    relu(Σ_channels R_pixels + R_pos/p² painted on its patch)) — or the positions as they are, and None,
    when they match no patch grid of the image."""
    height, width, length = pixels.shape[-2], pixels.shape[-1], positional.shape[-1]
    for special in (1, 2, 0):
        patches = length - special
        p = math.isqrt(height * width // patches) if patches > 0 else 0
        if p and height % p == 0 and width % p == 0 and (height // p) * (width // p) == patches:
            per_patch = positional[..., special:]
            return per_patch, torch.relu(pixels.sum(-3) + paint(per_patch, height, width, p) / p**2)
    return positional, None


def combined(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """(R_tok + R_pos) normalised by its largest magnitude per sample; None where the shapes differ."""
    if tokens.shape != positions.shape:
        return None
    score = tokens + positions
    peak = score.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(score.dtype).tiny)
    return score / peak


def positional_outputs(
    sources: list[PositionalSource],
    reached: dict[fx.Node, Any],
    mode: str,
    lead: tuple,
    relevance: dict[str, torch.Tensor],
    zeros_like: tuple[int, torch.dtype, torch.device],
) -> tuple[Any, torch.Tensor, Any]:
    """PA-LRP's (positional, its signed total per sample, combined): one [*lead, B, T] tensor per sequence,
    matched to the inputs by length; dicts keyed by input name when an encoder-decoder has two lengths.
    `zeros_like`: (batch, dtype, device) of the zeros returned when no positional encoding was found."""
    batch, dtype, device = zeros_like
    by_length = per_position(sources, reached, mode, len(lead))
    signed_by_length = per_position(sources, reached, "signed", len(lead))
    sequences = {r.shape[len(lead) + 1]: n for n, r in relevance.items() if r.dim() > len(lead) + 1}
    if not by_length:  # no positional encoding found: zeros for the first sequence
        length = next(iter(sequences), 1)
        zeros = torch.zeros((*lead, batch, length), dtype=dtype, device=device)
        by_length, signed_by_length = {length: zeros}, {length: zeros}
    signed = sum(t.sum(-1) for t in signed_by_length.values())
    image = next((r for r in relevance.values() if r.dim() == len(lead) + 4), None)
    if image is not None and len(by_length) == 1:  # a vision transformer: per patch, and painted on the pixels
        patches, mixed = _on_image(next(iter(by_length.values())), image)
        return patches, signed, mixed
    if len(by_length) == 1:
        ((length, positional),) = by_length.items()
        name = sequences.get(length)
        mixed = combined(relevance[name], positional) if name is not None else None
        return positional, signed, mixed
    named = {sequences.get(length, f"length_{length}"): t for length, t in by_length.items()}
    mixed = {n: combined(relevance[n], t) for n, t in named.items() if n in relevance}
    return named, signed, mixed
