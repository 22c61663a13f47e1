"""absLRP's per-sample rescalings, N1 and Nmax: shared by its kernels, its contrastive map and GAE."""

from __future__ import annotations

import torch

EPS = 1e-9  # the absLRP authors' stabilizer, in every denominator and in N1


def _groups(R: torch.Tensor, samples: int) -> torch.Tensor:
    return R.reshape(samples, -1) if samples and R.numel() % samples == 0 else R.reshape(1, -1)


def n1(R: torch.Tensor, samples: int, eps: float | torch.Tensor = EPS) -> torch.Tensor:
    """N1: R / (Σ|R| + 1e-9) per sample (dim 0, or the leading block of a flattened batch). `eps`: another
    stabilizer, one number or one per sample (`mass`'s shape)."""
    groups = _groups(R, samples)
    eps = eps.reshape(-1, 1) if isinstance(eps, torch.Tensor) else eps
    return (groups / (groups.abs().sum(-1, keepdim=True) + eps)).reshape(R.shape)


def mass(R: torch.Tensor, samples: int) -> torch.Tensor:
    """Σ|R| per sample, grouped as `n1` groups it: [samples] (or [1])."""
    return _groups(R, samples).abs().sum(-1)


def nmax(R: torch.Tensor, samples: int) -> torch.Tensor:
    """Nmax: R / (max|R| + 1e-9) per sample."""
    groups = R.reshape(samples, -1)
    return (groups / (groups.abs().amax(-1, keepdim=True) + EPS)).reshape(R.shape)
