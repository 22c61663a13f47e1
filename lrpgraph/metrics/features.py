"""What a metric removes and what it scores: tokens of a sequence, or pixels/patches of an image.

A `Features` object splits an input into n features per sample, removes any subset of them (tokens by
a replacement id or a zeroed embedding; image regions by the image mean or a blur), tells which are
removable (not padding, not protected special tokens), reduces a relevance map to one value per
feature, and reads the score being explained (a logit or probability) from the model's output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

Score = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def model_output(model: torch.nn.Module, inputs: dict, output: str | int | None = None) -> torch.Tensor:
    """The explained output tensor of a call (a ModelOutput field, a tuple entry or the tensor itself)."""
    result = model(**inputs)
    if isinstance(result, torch.Tensor):
        return result
    if output is not None and not isinstance(output, int):
        return result[output]
    values = [v for v in (result.values() if hasattr(result, "values") else result) if isinstance(v, torch.Tensor)]
    return values[0 if output is None else output]


def target_scores(out: torch.Tensor, target: torch.Tensor, score: Score = "logit") -> torch.Tensor:
    """[B] scores: out[b, target[b]] for [B, C] outputs, at the last position for [B, T, C]."""
    if callable(score):
        return score(out, target)
    if score == "probability":
        out = out.softmax(-1)
    elif score != "logit":
        raise ValueError(f"score must be 'logit', 'probability' or a function, not {score!r}")
    if out.dim() == 3:
        out = out[:, -1]
    if out.dim() != 2:
        raise ValueError(f"cannot read class scores from an output of shape {tuple(out.shape)}; pass score=fn")
    return out.gather(1, target.reshape(-1, 1).to(out.device)).squeeze(1)


@dataclass
class Features:
    """Base: subclasses define count, valid, reduce and remove."""

    key: str
    score: Score = "logit"
    output: str | int | None = None

    def count(self, inputs: dict) -> int:
        raise NotImplementedError

    def valid(self, inputs: dict) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, relevance: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def remove(self, model: torch.nn.Module, inputs: dict, drop: torch.Tensor) -> dict:
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, inputs: dict, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [B], the full output rows being scored [B, C]) without building an autograd graph."""
        with torch.no_grad():
            out = model_output(model, inputs, self.output)
        rows = out[:, -1] if out.dim() == 3 else out
        return target_scores(out, target, self.score), rows.reshape(rows.shape[0], -1)


@dataclass
class TokenFeatures(Features):
    replacement_id: int | None = None
    protect: Sequence[int] = ()

    def count(self, inputs):
        return inputs[self.key].shape[1]

    def valid(self, inputs):
        ids = inputs[self.key]
        mask = inputs.get("attention_mask")
        ok = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        for token in self.protect:
            ok &= ids != token
        return ok

    def reduce(self, relevance):
        return relevance

    def remove(self, model, inputs, drop):
        perturbed = dict(inputs)
        if self.replacement_id is not None:
            perturbed[self.key] = torch.where(
                drop, torch.full_like(inputs[self.key], self.replacement_id), inputs[self.key]
            )
            return perturbed
        with torch.no_grad():
            embeds = model.get_input_embeddings()(inputs[self.key])
        perturbed.pop(self.key)
        perturbed["inputs_embeds"] = embeds.masked_fill(drop.unsqueeze(-1), 0.0)
        return perturbed


@dataclass
class ImageFeatures(Features):
    patch: int = 1
    fill: str | float = "mean"
    _fills: dict = field(default_factory=dict, repr=False)

    def count(self, inputs):
        h, w = inputs[self.key].shape[-2:]
        return (h // self.patch) * (w // self.patch)

    def valid(self, inputs):
        x = inputs[self.key]
        return torch.ones(x.shape[0], self.count(inputs), dtype=torch.bool, device=x.device)

    def reduce(self, relevance):
        r = relevance.sum(1) if relevance.dim() == 4 else relevance
        b, h, w = r.shape
        p = self.patch
        return r.reshape(b, h // p, p, w // p, p).sum((2, 4)).reshape(b, -1)

    def remove(self, model, inputs, drop):
        x = inputs[self.key]
        p = self.patch
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        pixels = drop.reshape(-1, 1, *grid).repeat_interleave(p, 2).repeat_interleave(p, 3)
        return {**inputs, self.key: torch.where(pixels, self._fill(x), x)}

    def _fill(self, x):
        if isinstance(self.fill, (int, float)):
            return torch.full_like(x, float(self.fill))
        if self.fill == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        if self.fill == "blur":
            kernel = max(3, (min(x.shape[-2:]) // 4) | 1)
            return F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
        raise ValueError(f"fill must be 'mean', 'blur' or a number, not {self.fill!r}")


def tokens(
    key: str = "input_ids",
    replacement_id: int | None = None,
    protect: Sequence[int] = (),
    score: Score = "logit",
    output: str | int | None = None,
) -> TokenFeatures:
    """Tokens as features: removed by `replacement_id` (UNK/PAD/MASK), or with None by a zeroed embedding."""
    return TokenFeatures(key=key, score=score, output=output, replacement_id=replacement_id, protect=tuple(protect))


def images(
    key: str = "pixel_values",
    patch: int = 1,
    fill: str | float = "mean",
    score: Score = "logit",
    output: str | int | None = None,
) -> ImageFeatures:
    """Image regions (patch × patch pixels, all channels) as features, removed by the mean, a blur or a value."""
    return ImageFeatures(key=key, score=score, output=output, patch=patch, fill=fill)


def relevance_batch(relevance: Any, shape: tuple[int, ...], key: str | None = None) -> torch.Tensor:
    """A relevance tensor as given, or `explain_many` results (one Explanation per sample, relevance of input
    `key` or the first) stacked into `shape` [B, T, …], each right-padded with zeros as explain_many pads."""
    if isinstance(relevance, torch.Tensor):
        return relevance
    parts = []
    for ex in relevance:
        r = ex.relevance[key] if key is not None and key in ex.relevance else next(iter(ex.relevance.values()))
        r = r.detach()
        if r.dim() >= 2 and r.shape[1] < shape[1]:
            r = F.pad(r, (0, 0) * (r.dim() - 2) + (0, shape[1] - r.shape[1]))
        parts.append(r)
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) != 1 or (sum(p.shape[0] for p in parts), *shapes.pop()) != tuple(shape):
        found = [tuple(p.shape) for p in parts]
        raise ValueError(f"explain_many results of shapes {found} do not stack to the inputs' {tuple(shape)}")
    return torch.cat(parts)


def take_samples(inputs: dict, batch: int, rows: slice) -> dict:
    """The inputs of samples `rows`: tensors with a leading batch dim sliced, anything else as it is."""
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) else v for k, v in inputs.items()}


def as_dict(inputs: Any, key: str) -> dict:
    """Inputs as the keyword dict the metrics work on (a bare tensor becomes {key: tensor})."""
    if isinstance(inputs, torch.Tensor):
        return {key: inputs}
    return dict(inputs)
