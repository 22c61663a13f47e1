"""Localisation against a ground-truth mask: relevance mass inside it, and whether the top features hit it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Localisation:
    """Per sample: share of positive relevance inside the mask, top-k hit rate (k = mask size), top-1 hit."""

    mass: torch.Tensor
    top_k: torch.Tensor
    top_1: torch.Tensor

    def summary(self) -> dict[str, float]:
        return {"mass": self.mass.mean().item(), "top_k": self.top_k.mean().item(), "top_1": self.top_1.mean().item()}


def localisation(relevance: torch.Tensor, mask: torch.Tensor) -> Localisation:
    """relevance and mask [B, n] (per feature). A sample without positive relevance has mass 0 (documented,
    never NaN); a mask of another shape, or an empty mask, is an error."""
    if relevance.shape != mask.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match relevance of shape {tuple(relevance.shape)}"
        )
    mask = mask.bool()
    if not mask.any(1).all():
        raise ValueError("every sample needs at least one ground-truth feature in its mask")
    positive = relevance.double().clamp_min(0)
    total = positive.sum(1)
    mass = torch.where(total > 0, (positive * mask).sum(1) / total.clamp_min(1e-300), torch.zeros_like(total))
    order = torch.argsort(-relevance.double(), dim=1, stable=True)
    hits = mask.gather(1, order).double()
    k = mask.sum(1)
    top_k = torch.stack([hits[b, : int(k[b])].mean() for b in range(len(k))])
    return Localisation(mass, top_k, hits[:, 0])
