"""What `explain` returns: relevance per input, the output, and where the relevance went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Conservation:
    """Where the seed's relevance went, per sample (dim 0) for inputs, in totals over the batch for the rest.

    `absorbed` holds what rules did not pass on: "bias" (biases and parameter terms of sums),
    "constants" (constant operands: masks, position tables, scalars), "rules" (stabilisers and
    non-conservative rules such as flat, z^B, alpha-beta) and "fallback" (explicit fallbacks).
    """

    seed: torch.Tensor
    inputs: dict[str, torch.Tensor]
    absorbed: dict[str, float]
    positional: torch.Tensor | None = None  # signed relevance of positional encodings (PA-LRP), per sample

    @property
    def input_total(self) -> torch.Tensor:
        """Relevance that reached the inputs, per sample ([K, B] for K targets)."""
        return sum(self.inputs.values(), torch.zeros_like(self.seed))

    @property
    def accounted(self) -> torch.Tensor:
        """Relevance that reached inputs or positions, per sample."""
        return self.input_total if self.positional is None else self.input_total + self.positional

    @property
    def error(self) -> torch.Tensor:
        """seed − (inputs + positions) per sample, relative to |seed|: 0 for a conserving explanation."""
        return (self.seed - self.accounted) / self.seed.abs().clamp_min(1e-30)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{k}={v.sum().item():.6g}" for k, v in self.inputs.items())
        absorbed = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.absorbed.items()))
        positions = "" if self.positional is None else f"; positions: {self.positional.sum().item():.6g}"
        return (
            f"Conservation(seed={self.seed.sum().item():.6g}; inputs: {inputs}{positions}; "
            f"absorbed: {absorbed or 'none'})"
        )


@dataclass
class Explanation:
    """Relevance of every input (keyed by input name, shaped like the input; per token for ids)."""

    relevance: dict[str, torch.Tensor]
    output: torch.Tensor
    seed_relevance: Any  # the seed as given to the walk (kept compact when it is nonzero in a few rows)
    conservation: Conservation
    rules: str
    latent: dict[str, torch.Tensor] = field(default_factory=dict)
    positional: torch.Tensor | None = None  # PA-LRP: relevance per position [B, T] (per patch for images)
    combined: torch.Tensor | None = None  # PA-LRP: (token + positional relevance) / its max |·|, per sample
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> torch.Tensor:
        """The relevance placed on the output, as a dense tensor shaped like the output ([K, …] for K targets)."""
        seed = self.seed_relevance
        return seed.dense() if hasattr(seed, "dense") else seed

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.relevance.items())
        return f"Explanation(rules={self.rules!r}, relevance={{{shapes}}}, {self.conservation!r})"
