"""PA-LRP's NLP protocol: insertion ("generation") and pruning curves over token fractions f = 0, 0.1, …, 1.

Insertion: every token is UNK except the n = ⌈f·N⌉ highest-ranked, restored. Pruning: the n lowest-ranked
become UNK. N is the full sequence length (padding included), as in the authors' evaluation. Each curve
records the class probability, the class logit and the output's squared change from the unperturbed
input; AU-AC, AU-MSE, MERF and LERF are areas under them (trapezoid over f, then the mean over samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .features import as_dict, model_output, relevance_batch
from .perturbation import rank_of


@dataclass
class TokenCurve:
    """One protocol's curves [B, F] at `fractions` [F]."""

    fractions: torch.Tensor
    probability: torch.Tensor  # of the class
    logit: torch.Tensor  # of the class
    squared_change: torch.Tensor  # Σ over classes (p0 − p)², or (logit0 − logit)² of the class

    def _area(self, curve: torch.Tensor) -> torch.Tensor:
        return torch.trapezoid(curve, self.fractions.to(curve), dim=-1)

    @property
    def au_ac(self) -> torch.Tensor:
        """Area under the class probability, per sample."""
        return self._area(self.probability)

    @property
    def au_mse(self) -> torch.Tensor:
        """Area under the squared change, per sample."""
        return self._area(self.squared_change)

    @property
    def area_logit(self) -> torch.Tensor:
        """Area under the class logit, per sample (MERF for insertion most relevant first, LERF least first)."""
        return self._area(self.logit)

    def summary(self) -> dict[str, float]:
        return {
            "au_ac": self.au_ac.mean().item(),
            "au_mse": self.au_mse.mean().item(),
            "logit": self.area_logit.mean().item(),
        }


def token_fractions(steps: int = 10) -> torch.Tensor:
    """0, 1/steps, …, 1."""
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def insertion_curve(
    model: torch.nn.Module,
    inputs: Any,
    target: torch.Tensor | int,
    relevance: torch.Tensor | Sequence[Any],
    unk_id: int,
    *,
    rank: str = "signed",
    most_relevant_first: bool = True,
    change: str = "classes",
    fractions: torch.Tensor | None = None,
    key: str = "input_ids",
    output: str | int | None = None,
) -> TokenCurve:
    """All tokens UNK except the ⌈f·N⌉ ranked first, restored: most relevant first (its logit area is MERF)
    or least relevant first (LERF). rank: "signed" relevance or "absolute" |relevance|."""
    return _curve(
        model, inputs, target, relevance, unk_id, rank, most_relevant_first, True, change, fractions, key, output
    )


def pruning_curve(
    model: torch.nn.Module,
    inputs: Any,
    target: torch.Tensor | int,
    relevance: torch.Tensor | Sequence[Any],
    unk_id: int,
    *,
    rank: str = "absolute",
    change: str = "classes",
    fractions: torch.Tensor | None = None,
    key: str = "input_ids",
    output: str | int | None = None,
) -> TokenCurve:
    """The ⌈f·N⌉ least relevant tokens (by |relevance|, or signed) become UNK."""
    return _curve(model, inputs, target, relevance, unk_id, rank, False, False, change, fractions, key, output)


def _curve(model, inputs, target, relevance, unk_id, rank, descending, insert, change, fractions, key, output):
    if rank not in ("signed", "absolute"):
        raise ValueError(f"rank must be 'signed' or 'absolute', not {rank!r}")
    if change not in ("classes", "logit"):
        raise ValueError("change must be 'classes' (Σ over classes of the squared probability change) or 'logit'")
    inputs = as_dict(inputs, key)
    ids = inputs[key]
    batch, length = ids.shape
    relevance = relevance_batch(relevance, (batch, length), key)
    if tuple(relevance.shape) != (batch, length):
        raise ValueError(f"relevance of shape {tuple(relevance.shape)} does not match the ids {tuple(ids.shape)}")
    score = relevance.detach().double().to(ids.device)
    score = score.abs() if rank == "absolute" else score
    ranks = rank_of(torch.argsort(-score if descending else score, dim=1, stable=True))
    target = torch.as_tensor(target).reshape(-1).expand(batch).to(ids.device)
    fractions = token_fractions() if fractions is None else torch.as_tensor(fractions, dtype=torch.float64)
    base_logits = _class_rows(model, inputs, output)
    base_probs = base_logits.softmax(-1)
    rows = torch.arange(batch, device=ids.device)
    probability, logit, squared = [], [], []
    for f in fractions.tolist():
        n = math.ceil(f * length - 1e-9)
        chosen = ranks < n  # the first n of the order
        unk = ~chosen if insert else chosen
        logits = _class_rows(model, {**inputs, key: torch.where(unk, torch.full_like(ids, unk_id), ids)}, output)
        probs = logits.softmax(-1)
        probability.append(probs[rows, target])
        logit.append(logits[rows, target])
        if change == "classes":
            squared.append(((base_probs - probs) ** 2).sum(-1))
        else:
            squared.append((base_logits[rows, target] - logits[rows, target]) ** 2)
    stack = lambda values: torch.stack(values, 1).double().cpu()  # noqa: E731
    return TokenCurve(fractions, stack(probability), stack(logit), stack(squared))


def _class_rows(model: torch.nn.Module, inputs: dict, output: str | int | None) -> torch.Tensor:
    """[B, C] class logits: a classifier's output, or a causal LM's last position."""
    with torch.no_grad():
        out = model_output(model, inputs, output)
    return (out[:, -1] if out.dim() == 3 else out).double()
