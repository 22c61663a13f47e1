"""PA-LRP outputs: which positional encodings take relevance, and relevance per position.

The graph pass (flow/positional.py) finds the candidates; here table lookups are kept only where
their ids are positions (not all alike; user inputs only when named position ids), and the relevance
the walk leaves at each source is summed to one value per (sample, position).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ..capture.graph import INPUT, Graph
from ..capture.shapes import Shapes
from ..flow.positional import PositionalSource
from ..propagate.schedule import recipe_for
from ..propagate.store import ActivationStore


def select_sources(
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
    value = ActivationStore(value_of, shapes, {ids: recipe}).get(ids)
    if not isinstance(value, torch.Tensor) or value.numel() < 2:
        return False
    return bool((value != value.reshape(-1)[0]).any())  # positions differ; token-type ids are all alike


def per_position(
    sources: list[PositionalSource], reached: dict[fx.Node, Any], mode: str, lead: int
) -> dict[int, torch.Tensor]:
    """{sequence length: [*lead, B, T]}: additive sources signed, rotary sources |Σ| per source (mode "abs")
    or signed. Sources are grouped by the length of their position axis (an encoder-decoder has two)."""
    totals: dict[int, torch.Tensor] = {}
    for source in sources:
        R = reached.get(source.node)
        if R is None:
            continue
        axis = source.axis + lead
        dims = [d for d in range(R.dim()) if d not in (*range(lead), lead, axis)]
        values = R.sum(dim=dims) if dims else R
        if mode == "abs" and source.kind == "rotary":
            values = values.abs()
        length = values.shape[-1]
        totals[length] = values if length not in totals else totals[length] + values
    return totals


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
    if len(by_length) == 1:
        ((length, positional),) = by_length.items()
        name = sequences.get(length)
        mixed = combined(relevance[name], positional) if name is not None else None
        return positional, signed, mixed
    named = {sequences.get(length, f"length_{length}"): t for length, t in by_length.items()}
    mixed = {n: combined(relevance[n], t) for n, t in named.items() if n in relevance}
    return named, signed, mixed
