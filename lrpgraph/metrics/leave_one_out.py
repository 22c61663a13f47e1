"""Leave-one-out agreement: does relevance rank features like the output drop when each is removed alone?"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from .features import Features, as_dict, take_samples


@dataclass
class LeaveOneOut:
    """Per-sample Pearson and Spearman correlation [B], and the drops [B, n] (NaN where not removable)."""

    pearson: torch.Tensor
    spearman: torch.Tensor
    drops: torch.Tensor

    def summary(self) -> dict[str, float]:
        return {"pearson": self.pearson.mean().item(), "spearman": self.spearman.mean().item()}


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks with ties given their average rank (as Spearman's correlation needs)."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    r = torch.empty_like(x, dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64, device=x.device)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    mean_rank = (starts + (counts - 1) / 2).double()
    r[order] = mean_rank[inverse]
    return r


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = a.norm() * b.norm()
    if denominator == 0:
        raise ValueError("a correlation is undefined when relevance or the output drops do not vary")
    return float(a @ b / denominator)


def leave_one_out(
    model: torch.nn.Module,
    inputs,
    target: torch.Tensor | int,
    relevance: torch.Tensor,
    features: Features,
    batch_size: int = 64,
    progress: bool = False,
) -> LeaveOneOut:
    """Remove each removable feature alone; correlate the score drops with the relevance, per sample.

    Raises ValueError where a correlation is undefined: constant relevance, or an output that does not
    change whichever feature is removed.
    """
    inputs = as_dict(inputs, features.key)
    per_feature = features.reduce(relevance.detach()).double()
    valid = features.valid(inputs)
    batch, n = per_feature.shape
    target = torch.as_tensor(target).reshape(-1).expand(batch)
    base, _ = features.evaluate(model, inputs, target)
    drops = torch.full((batch, n), float("nan"), dtype=torch.float64)
    for b in range(batch):
        if progress:
            print(f"\rleave-one-out {b + 1}/{batch}", end="", file=sys.stderr, flush=True)
        positions = valid[b].nonzero().squeeze(1).tolist()
        one = take_samples(inputs, batch, slice(b, b + 1))
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            copies = {
                k: v.expand(len(chunk), *v.shape[1:]) if isinstance(v, torch.Tensor) and v.shape[:1] == (1,) else v
                for k, v in one.items()
            }
            drop = torch.zeros(len(chunk), n, dtype=torch.bool, device=valid.device)
            drop[torch.arange(len(chunk)), torch.tensor(chunk)] = True
            scores, _ = features.evaluate(model, features.remove(model, copies, drop), target[b].expand(len(chunk)))
            drops[b, chunk] = (base[b] - scores).double().cpu()
    if progress:
        print(file=sys.stderr)
    p, s = [], []
    for b in range(batch):
        keep = valid[b].cpu()
        r, d = per_feature[b].cpu()[keep], drops[b][keep]
        p.append(pearson(r, d))
        s.append(pearson(ranks(r), ranks(d)))
    return LeaveOneOut(torch.tensor(p), torch.tensor(s), drops)
