"""Seed functions for heads that live outside the model: pass them as `target=`.

`cosine_similarity` explains the similarity of mean-pooled sentence embeddings (sentence
transformers): the pooling and the cosine are propagated with the library's own rules — Norm for
the masked mean, the uniform rule for the products e₁ᵈ·e₂ᵈ, the norms held constant as
normalisation scales — so the seed on the token states sums to the cosine similarity itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import TargetError


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings [B, D]: the mean of each row's token states [B, T, D] over its real tokens."""
    mask = attention_mask.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1)


def cosine_similarity(
    attention_mask: torch.Tensor, pairs: Sequence[tuple[int, int]] = ((0, 1),)
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Seed for cos(mean(h_a), mean(h_b)) of each pair of batch rows of `last_hidden_state` [B, T, D].

    Each sentence gets half of the similarity: R[a, t, d] = m_t h[a, t, d] e_b[d] / (2 Σm |e_a| |e_b|).
    """

    def seed(hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
            raise TargetError(
                f"cosine_similarity seeds token states [batch, tokens, features] matching the attention mask "
                f"{tuple(attention_mask.shape)}, got {tuple(hidden.shape)}"
            )
        outside = [pair for pair in pairs if not all(0 <= i < hidden.shape[0] for i in pair)]
        if outside:
            raise TargetError(f"pairs {outside} name rows outside the batch of {hidden.shape[0]}")
        mask = attention_mask.to(device=hidden.device, dtype=hidden.dtype).unsqueeze(-1)
        counts = mask.sum(1)
        embeddings = mean_pool(hidden, attention_mask)
        norms = embeddings.norm(dim=-1)
        out = torch.zeros_like(hidden)
        for a, b in pairs:
            scale = 2 * norms[a] * norms[b]
            out[a] += hidden[a] * mask[a] * embeddings[b] / (counts[a] * scale)
            out[b] += hidden[b] * mask[b] * embeddings[a] / (counts[b] * scale)
        return out

    return seed


def similarity(hidden: torch.Tensor, attention_mask: torch.Tensor, pair: tuple[int, int] = (0, 1)) -> float:
    """The cosine similarity of two mean-pooled rows (what `cosine_similarity` distributes)."""
    embeddings = mean_pool(hidden, attention_mask)
    return float(torch.nn.functional.cosine_similarity(embeddings[pair[0]], embeddings[pair[1]], dim=0))
