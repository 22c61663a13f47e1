"""absLRP's GAE (global attribution evaluation), step by step as the authors' code computes it.

Images are tiled four at a time into 2×2 mosaics (each downsampled ×½, nearest). Per mosaic a positive
quadrant is drawn (softmax over the quadrants of the mosaic's logit at each image's predicted class); its
image x⁺ and predicted class y⁺ are then scored:
- faithfulness F: gradient masking of x⁺ (most and least relevant first, by |x ⊙ ∇ logit|) gives a sign map C;
  F = Σ C ⊙ R(x⁺) / ΣR(x⁺);
- robustness Rb: how the map's drift under the two maskings tracks the logit's, 1 − 2·d(Δr, Δo);
- local consistency LC = relu(F + Rb)/2;
- contrastiveness Ctr: the mosaic's map for y⁺ weighted by each quadrant's σ_q = 2·p⁺(ℓ_q)/p⁺(ℓ⁺) − 1;
- GAE = LC · Ctr. R(x) = Nmax(relu(map(x, y⁺))), channels kept.

The authors' code samples and scores mosaic m from images 4m..4m+3 but tiles images m, M+m, 2M+m, 3M+m
(M = B/4); they agree only for B = 4. `grouping="consistent"` (default) tiles the images it scores;
`grouping="reference"` reproduces the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..capture.model_state import evaluation_mode
from ..ops.rescale import n1, nmax
from .features import model_output

EPS = 1e-9
Attribution = Callable[[torch.nn.Module, Any, Any], torch.Tensor]


@dataclass
class GAE:
    """Per positive (one per mosaic): each component and GAE = LC · Ctr; `summary` gives their means."""

    faithfulness: torch.Tensor
    robustness: torch.Tensor
    local_consistency: torch.Tensor
    contrastiveness: torch.Tensor
    gae: torch.Tensor
    positives: torch.Tensor  # index of each mosaic's positive image in the batch

    def summary(self) -> dict[str, float]:
        return {
            "faithfulness": self.faithfulness.mean().item(),
            "robustness": self.robustness.mean().item(),
            "local_consistency": self.local_consistency.mean().item(),
            "contrastiveness": self.contrastiveness.mean().item(),
            "gae": self.gae.mean().item(),
        }


def gae(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attribution: Attribution,
    *,
    steps: int = 10,
    key: str = "pixel_values",
    generator: torch.Generator | None = None,
    grouping: str = "consistent",
) -> GAE:
    """GAE of an attribution function `fn(model, {key: x}, target) -> map` on a batch of model-ready images
    [B, C, H, W] (B a multiple of 4, H and W even) with their data set labels."""
    batch, _, height, width = images.shape
    if batch % 4 or batch == 0 or height % 2 or width % 2:
        raise ValueError(f"GAE needs a batch that is a multiple of 4 and even image sides, got {tuple(images.shape)}")
    if grouping not in ("consistent", "reference"):
        raise ValueError(f"grouping must be 'consistent' or 'reference', not {grouping!r}")
    labels = torch.as_tensor(labels).reshape(-1).to(images.device)
    groups = torch.arange(batch, device=images.device).reshape(-1, 4)  # mosaic m: images 4m..4m+3
    tiled = groups if grouping == "consistent" else groups.reshape(4, -1).t()  # the code: m, M+m, 2M+m, 3M+m
    mosaics = mosaic(images[tiled])
    logits = _logits(model, images, key)
    predicted = logits.argmax(-1)
    mosaic_logits = _logits(model, mosaics, key)
    chance = mosaic_logits.gather(1, predicted[groups]).softmax(-1)  # over the 4 quadrants
    quadrant = torch.multinomial(chance.cpu(), 1, generator=generator).reshape(-1).to(images.device)
    mosaic_ids = torch.arange(len(groups), device=images.device)
    positive = groups[mosaic_ids, quadrant]
    x, y = images[positive], predicted[positive]

    def R(inputs: torch.Tensor) -> torch.Tensor:
        return nmax(torch.relu(attribution(model, {key: inputs}, y).detach().double()), inputs.shape[0])

    morf = _masking(model, x, y, steps, key, most_first=True)
    lerf = _masking(model, x, y, steps, key, most_first=False)
    count = x.shape[0]
    r0 = R(x)
    sign = torch.sign(n1(morf.g_sum_lerf_minus(lerf), count))
    faithful = (sign * r0).flatten(1).sum(1) / (r0.flatten(1).sum(1) + EPS)
    drift = torch.stack(
        [_distance(r0, R(morf.x[t])) - _distance(r0, R(lerf.x[t])) for t in range(1, steps)], 1
    )  # Δr_t, t = 1..T−1
    change = (lerf.o[:, 1:] - morf.o[:, 1:]) / (morf.o[:, :1] + EPS)  # Δo_t
    robust = 1 - 2 * _distance(drift, change)
    consistency = torch.relu(faithful + robust) / 2
    p = logits[positive].double().softmax(-1)
    sigma = 2 * p.gather(1, labels[groups]) / p.gather(1, labels[positive][:, None]) - 1  # [M, 4], scored group
    weights = quadrant_map(sigma, height, width)
    r_mosaic = R(mosaics[mosaic_ids])
    contrast = torch.relu((weights[:, None] * r_mosaic).flatten(1).sum(1) / (r_mosaic.flatten(1).sum(1) + EPS))
    return GAE(faithful, robust, consistency, contrast, consistency * contrast, positive)


def mosaic(quads: torch.Tensor) -> torch.Tensor:
    """[M, 4, C, H, W] images → [M, C, H, W] 2×2 mosaics of them downsampled ×½ (nearest): quadrants in
    reading order (top left, top right, bottom left, bottom right)."""
    m, _, c, h, w = quads.shape
    small = F.interpolate(quads.reshape(m * 4, c, h, w), size=(h // 2, w // 2), mode="nearest")
    small = small.reshape(m, 2, 2, c, h // 2, w // 2)
    return small.permute(0, 3, 1, 4, 2, 5).reshape(m, c, h, w)


def quadrant_map(sigma: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[M, 4] quadrant scores → [M, H, W] weights, the centre 2×2 pixels set to 1."""
    grid = sigma.reshape(-1, 2, 2).double()
    weights = grid.repeat_interleave(height // 2, 1).repeat_interleave(width // 2, 2)
    weights[:, height // 2 - 1 : height // 2 + 1, width // 2 - 1 : width // 2 + 1] = 1.0
    return weights


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b) = Σ|a − b| / (Σ|a| + Σ|b| + 1e-9) per sample."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a - b).abs().sum(1) / (a.abs().sum(1) + b.abs().sum(1) + EPS)


def _logits(model: torch.nn.Module, x: torch.Tensor, key: str) -> torch.Tensor:
    with torch.no_grad():
        return model_output(model, {key: x})


@dataclass
class _Masked:
    x: list[torch.Tensor]  # x_t, t = 0..T−1
    o: torch.Tensor  # [N, T] logit of y⁺
    g: list[torch.Tensor]  # G_t

    def g_sum_lerf_minus(self, lerf: _Masked) -> torch.Tensor:
        """N1(Σ_t G_t^LeRF) − N1(Σ_t G_t^MoRF): the sign map's argument (self is the MoRF run)."""
        count = self.x[0].shape[0]
        return n1(sum(lerf.g), count) - n1(sum(self.g), count)


def _masking(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, key: str, most_first: bool
) -> _Masked:
    """Gradient masking: x_{t+1} = x_t with its ⌊(t+1)/T·D⌋ largest (or smallest) G_t entries set to 0,
    G_t = N1(|x_t ⊙ ∇ logit_y(x_t)|) over all D = C·H·W entries."""
    count, entries = x.shape[0], x[0].numel()
    xs, outs, gs = [], [], []
    current = x.detach()
    rows = torch.arange(count, device=x.device)
    for t in range(steps):
        point = current.clone().requires_grad_()
        with evaluation_mode(model):
            logit = model_output(model, {key: point})[rows, y]
            (grad,) = torch.autograd.grad(logit.sum(), point)
        g = n1((point.detach() * grad).abs().double(), count)
        xs.append(current)
        outs.append(logit.detach().double())
        gs.append(g)
        if t < steps - 1:
            k = (t + 1) * entries // steps
            order = torch.argsort(g.flatten(1), dim=1, descending=most_first, stable=True)
            drop = torch.zeros_like(order, dtype=torch.bool).scatter_(1, order[:, :k], True).reshape(x.shape)
            current = current.masked_fill(drop, 0.0)
    return _Masked(xs, torch.stack(outs, 1), gs)
