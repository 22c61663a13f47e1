"""Perturbation curves: remove features most-relevant-first (MoRF) and least-relevant-first (LeRF).

At each removal fraction the target score is recorded. Faithful relevance makes the MoRF curve fall
fast and the LeRF curve stay high, so ABPC = area(LeRF) − area(MoRF) is large. AU-MSE is the area under
the mean squared change of the scored output row (all classes) along the MoRF curve.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from .features import Features, as_dict


def flipping_fractions(steps: int = 10) -> torch.Tensor:
    """0, 1/steps, …, 1: the share of (removable) features removed at each point of a curve."""
    return torch.linspace(0.0, 1.0, steps + 1)


@dataclass
class Curves:
    """Per-sample curves [B, F] at `fractions`, their areas [B] (x from 0 to 1) and the derived scores."""

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    area_morf: torch.Tensor
    area_lerf: torch.Tensor
    abpc: torch.Tensor
    au_mse: torch.Tensor

    def summary(self) -> dict[str, float]:
        return {
            "abpc": self.abpc.mean().item(),
            "area_morf": self.area_morf.mean().item(),
            "area_lerf": self.area_lerf.mean().item(),
            "au_mse": self.au_mse.mean().item(),
        }


def _area(curve: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(curve, fractions.to(curve), dim=-1)


def orders(relevance: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MoRF, LeRF) feature orders per sample; unremovable features last; ties by position (stable)."""
    relevance = relevance.double()
    morf = torch.argsort(torch.where(valid, -relevance, torch.inf), dim=1, stable=True)
    lerf = torch.argsort(torch.where(valid, relevance, torch.inf), dim=1, stable=True)
    return morf, lerf


def rank_of(order: torch.Tensor) -> torch.Tensor:
    """Each feature's place in its row's `order` (the inverse permutation, per row)."""
    places = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, places)


def _drop(order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mask of the first counts[b] features of each row's order."""
    return rank_of(order) < counts[:, None]


def perturbation_curves(
    model: torch.nn.Module,
    inputs,
    target: torch.Tensor | int,
    relevance: torch.Tensor,
    features: Features,
    fractions: torch.Tensor | None = None,
    progress: bool = False,
) -> Curves:
    """MoRF and LeRF curves for a batch (one forward per fraction and order).

    relevance: per feature after `features.reduce` (tokens: [B, T]; images: the input's shape).
    Raises ValueError for all-zero relevance (the removal order would be arbitrary) and for a relevance
    map that does not fit the inputs. A model whose output never changes gives flat curves, ABPC 0.
    """
    inputs = as_dict(inputs, features.key)
    fractions = flipping_fractions() if fractions is None else torch.as_tensor(fractions, dtype=torch.float64)
    per_feature = features.reduce(relevance.detach())
    batch, n = per_feature.shape[0], features.count(inputs)
    if per_feature.shape != (batch, n):
        raise ValueError(f"relevance of shape {tuple(relevance.shape)} does not fit {n} features per sample")
    valid = features.valid(inputs).to(per_feature.device)
    if not torch.isfinite(per_feature).all():
        raise ValueError("relevance contains NaN or infinite values")
    if (per_feature.abs() * valid).sum(1).eq(0).any():
        raise ValueError("relevance is zero for a sample: the removal order is undefined")
    target = torch.as_tensor(target).reshape(-1).expand(batch)
    morf_order, lerf_order = orders(per_feature, valid)
    counts = valid.sum(1)
    _base_scores, base_rows = features.evaluate(model, inputs, target)
    curves = {"morf": [], "lerf": []}
    errors = []
    for i, f in enumerate(fractions.tolist()):
        if progress:
            print(f"\rperturbation {i + 1}/{len(fractions)}", end="", file=sys.stderr, flush=True)
        k = torch.round(counts.double() * f).long()
        for name, order in (("morf", morf_order), ("lerf", lerf_order)):
            drop = _drop(order, k).to(valid.device) & valid
            scores, rows = features.evaluate(model, features.remove(model, inputs, drop), target)
            curves[name].append(scores.double())
            if name == "morf":
                errors.append(((rows - base_rows) ** 2).mean(-1).double())
    if progress:
        print(file=sys.stderr)
    morf, lerf = torch.stack(curves["morf"], 1), torch.stack(curves["lerf"], 1)
    area_morf, area_lerf = _area(morf, fractions), _area(lerf, fractions)
    return Curves(
        fractions, morf, lerf, area_morf, area_lerf, area_lerf - area_morf, _area(torch.stack(errors, 1), fractions)
    )
