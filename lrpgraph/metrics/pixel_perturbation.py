"""PA-LRP's vision protocol: remove single pixels (all channels) by their relevance and watch the prediction.

For p = 0.1, …, 0.9, each from the original image, the ⌊p·H·W⌋ pixels with the highest map values
(positive test) or the lowest (negative test) are set to 0 in the raw image — before the model's
normalisation — or, as variants, to a Gaussian blur (kernel 51, σ 20) or the per-channel mean. Recorded
per step: whether the prediction is still the original one ("top") and still the label ("target"), and
the original prediction's logit and probability; AUC = trapezoid of the per-step means over p. Lower is
better for the positive test, higher for the negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from .features import model_output, relevance_batch
from .perturbation import rank_of


@dataclass
class PixelCurves:
    """Per-sample curves [B, P] at `fractions` [P]."""

    fractions: torch.Tensor
    top: torch.Tensor  # 1 where the prediction is still the original one
    target: torch.Tensor  # 1 where the prediction is the label (NaN without labels)
    logit: torch.Tensor  # the original prediction's logit
    probability: torch.Tensor  # … and probability

    def auc(self, curve: str = "top") -> float:
        """Trapezoid over the fractions of the curve's per-step mean over samples."""
        values = getattr(self, curve).mean(0)
        return torch.trapezoid(values, self.fractions.to(values)).item()

    def summary(self) -> dict[str, float]:
        return {name: self.auc(name) for name in ("top", "target", "logit", "probability")}


def pixel_fractions() -> torch.Tensor:
    """0.1, 0.2, …, 0.9."""
    return torch.arange(1, 10, dtype=torch.float64) / 10


def pixel_perturbation(
    model: torch.nn.Module,
    images: torch.Tensor,
    relevance: Any,
    labels: torch.Tensor | None = None,
    *,
    test: str = "positive",
    fill: str = "zero",
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fractions: torch.Tensor | None = None,
    key: str | None = None,
    blur: tuple[int, float] = (51, 20.0),
) -> PixelCurves:
    """Curves of the positive or negative perturbation test for raw images [B, C, H, W] (in [0, 1]).

    relevance: [B, H, W] or [B, C, H, W] (summed over channels), or `explain_many` results; min-max
    normalised per sample as the authors do (it does not change the order). normalise: what the model
    expects on top of the raw image (e.g. ImageNet mean/std). key: the model's keyword for the image
    (default: positional).
    """
    if test not in ("positive", "negative"):
        raise ValueError(f"test must be 'positive' or 'negative', not {test!r}")
    batch, _, height, width = images.shape
    heat = relevance_batch(relevance, tuple(images.shape), key).detach().double()
    heat = heat.sum(1) if heat.dim() == 4 else heat
    if tuple(heat.shape) != (batch, height, width):
        raise ValueError(f"relevance of shape {tuple(relevance.shape)} does not fit images {tuple(images.shape)}")
    low = heat.flatten(1).amin(1)[:, None, None]
    high = heat.flatten(1).amax(1)[:, None, None]
    heat = (heat - low) / (high - low).clamp_min(1e-12)
    order = torch.argsort(heat.flatten(1), dim=1, descending=test == "positive", stable=True).to(images.device)
    ranks = rank_of(order)
    filled = _fill(images, fill, blur)
    fractions = pixel_fractions() if fractions is None else torch.as_tensor(fractions, dtype=torch.float64)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = normalise(x) if normalise is not None else x
        with torch.no_grad():
            return model_output(model, {key: x}) if key else _plain(model, x)

    original = run(images).double()
    predicted = original.argmax(-1)
    rows = torch.arange(batch, device=images.device)
    top, on_label, logit, probability = [], [], [], []
    for p in fractions.tolist():
        n = math.floor(p * height * width + 1e-9)
        removed = (ranks < n).reshape(batch, 1, height, width)
        out = run(torch.where(removed, filled, images)).double()
        top.append((out.argmax(-1) == predicted).double())
        hits = (out.argmax(-1) == labels.to(out.device)).double() if labels is not None else None
        on_label.append(hits if hits is not None else torch.full_like(out[:, 0], math.nan))
        logit.append(out[rows, predicted])
        probability.append(out.softmax(-1)[rows, predicted])
    stack = lambda values: torch.stack(values, 1).cpu()  # noqa: E731
    return PixelCurves(fractions, stack(top), stack(on_label), stack(logit), stack(probability))


def _plain(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out[0]


def _fill(images: torch.Tensor, fill: str, blur: tuple[int, float]) -> torch.Tensor:
    """What removed pixels become: 0, a Gaussian blur of the image, or each channel's mean."""
    if fill == "zero":
        return torch.zeros_like(images)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if fill == "blur":
        return gaussian_blur(images, *blur)
    raise ValueError(f"fill must be 'zero', 'blur' or 'mean', not {fill!r}")


def gaussian_blur(images: torch.Tensor, kernel: int = 51, sigma: float = 20.0) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (torchvision's GaussianBlur); a kernel wider than the
    image allows is cut to the largest odd size that reflection permits."""
    height, width = images.shape[-2:]
    kernel = min(kernel, 2 * min(height, width) - 1)
    kernel -= 1 - kernel % 2
    half = kernel // 2
    x = torch.arange(kernel, dtype=images.dtype, device=images.device) - half
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    channels = images.shape[1]
    padded = F.pad(images, (half, half, half, half), mode="reflect")
    rows = F.conv2d(padded, weights.reshape(1, 1, 1, -1).expand(channels, 1, 1, kernel), groups=channels)
    return F.conv2d(rows, weights.reshape(1, 1, -1, 1).expand(channels, 1, kernel, 1), groups=channels)
