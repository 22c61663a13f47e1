"""PA-LRP outputs: which positional encodings take relevance, and relevance per position.

The graph pass (passes/positional.py) finds the candidates; here table lookups are kept only where
their ids are positions (not all alike; user inputs only when named position ids), and the relevance
the walk leaves at each source is summed to one value per (sample, position).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from .graph import INPUT, Graph
from .passes.positional import PositionalSource
from .schedule import recipe_for
from .store import ActivationStore


def select_sources(
    graph: Graph, candidates: list[PositionalSource], value_of: dict[fx.Node, Any]
) -> list[PositionalSource]:
    """The candidates that are positional: computed rotary factors and tables, and lookups by position ids."""
    return [s for s in candidates if s.ids is None or _are_positions(graph, s.ids, value_of)]


def _are_positions(graph: Graph, ids: fx.Node, value_of: dict[fx.Node, Any]) -> bool:
    if ids.op == "placeholder" and graph.kinds.get(ids) == INPUT:
        return "position" in graph.input_names.get(ids, "")
    recipe = recipe_for(ids, set(), None, cheap_only=False)
    if recipe is None:
        return False
    value = ActivationStore(value_of, {ids: recipe}).get(ids)
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
