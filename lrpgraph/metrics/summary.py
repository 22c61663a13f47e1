"""Scalar summaries of a relevance map: conservation (completeness) error and concentration (Gini)."""

from __future__ import annotations

import torch


def completeness_error(relevance: torch.Tensor, explained: torch.Tensor) -> torch.Tensor:
    """|Σ relevance − explained value| / |explained value| per sample (0 where both are 0)."""
    if not isinstance(relevance, torch.Tensor) or relevance.dim() == 0:
        raise ValueError("relevance must be a tensor with a batch dimension")
    explained = torch.as_tensor(explained).double().reshape(-1)
    if explained.numel() != relevance.shape[0]:
        raise ValueError(
            f"explained has {explained.numel()} values for a relevance batch of {relevance.shape[0]}: one per sample"
        )
    total = relevance.reshape(relevance.shape[0], -1).double().sum(1)
    gap = (total - explained).abs()
    return torch.where(gap == 0, torch.zeros_like(gap), gap / explained.abs().clamp_min(1e-300))


def gini(relevance: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of |relevance| per sample: 0 = spread evenly, → 1 = on one feature (0 for all-zero)."""
    x = relevance.reshape(relevance.shape[0], -1).double().abs().sort(dim=1).values
    n = x.shape[1]
    index = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    total = x.sum(1)
    g = ((2 * index - n - 1) * x).sum(1) / (n * total.clamp_min(1e-300))
    return torch.where(total > 0, g, torch.zeros_like(g))
