"""What `explain_similarity` returns: the pair-by-pair interactions of each similarity, the first-order rows of both
sides, and where the similarity went; shown as a matrix, saved like an explanation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

FORMAT = "lrpgraph.similarity/1"
_TENSORS = (
    "interactions",
    "relevance_a",
    "relevance_b",
    "similarity",
    "maps_a",
    "maps_b",
    "embeddings_a",
    "embeddings_b",
)


@dataclass
class SimilarityExplanation:
    """BiLRP of P pairs: `interactions[p, i, j]` is the share of similarity p that position i of a and position j of b
    hold together; Σ_ij interactions[p] = similarity[p] when both sides' maps conserve (`unreached` says how far not).

    relevance_a/relevance_b [P, T]: the first-order rows (each side holding half the similarity), what `explain` with
    `lrpgraph.seeds.cosine_similarity` gives. maps_a/maps_b [P, T, D]: R_i(φ_m), each dimension's first-order map.
    """

    interactions: torch.Tensor
    relevance_a: torch.Tensor
    relevance_b: torch.Tensor
    similarity: torch.Tensor
    kind: str
    rules: str
    maps_a: torch.Tensor
    maps_b: torch.Tensor
    embeddings_a: torch.Tensor
    embeddings_b: torch.Tensor
    mask_a: torch.Tensor | None = None
    mask_b: torch.Tensor | None = None
    input: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    tokens_a: list[list[str]] | None = None
    tokens_b: list[list[str]] | None = None

    @property
    def unreached(self) -> torch.Tensor:
        """Per pair, the part of the similarity the interactions do not hold (kept by biases, other inputs,
        stabilizers), in float64."""
        return self.similarity.double() - self.interactions.double().sum((1, 2))

    def positions(self, pair: int = 0) -> tuple[list[int], list[int]]:
        """The real (unpadded) positions of pair `pair` on each side."""

        def real(mask: torch.Tensor | None, length: int) -> list[int]:
            return list(range(length)) if mask is None else mask[pair].nonzero().flatten().tolist()

        return real(self.mask_a, self.interactions.shape[1]), real(self.mask_b, self.interactions.shape[2])

    def top_pairs(self, pair: int = 0, k: int = 5) -> list[tuple[int, int, float]]:
        """The k strongest positive and the k strongest negative pairs (i, j, value) of pair `pair`, real positions
        only, strongest first within each sign."""
        rows, cols = self.positions(pair)
        block = self.interactions[pair][rows][:, cols].double()
        flat = block.flatten()
        order = flat.argsort(descending=True)
        positive = [int(i) for i in order[:k] if flat[i] > 0]
        negative = [int(i) for i in order.flip(0)[:k] if flat[i] < 0]
        width = len(cols)
        return [(rows[i // width], cols[i % width], float(flat[i])) for i in positive + negative]

    def show(self, pair: int = 0) -> None:
        """The matrix of pair `pair` with both inputs as axes: HTML in a notebook, text in a terminal."""
        from ..viz import show_similarity

        show_similarity(self, pair)

    def _repr_html_(self) -> str:
        """Notebooks display the matrix of the first pair."""
        from ..viz import similarity_html

        return similarity_html(self, 0)

    def __repr__(self) -> str:
        pairs, ta, tb = self.interactions.shape
        values = ", ".join(f"{float(v):.4g}" for v in self.similarity[:4])
        more = ", …" if pairs > 4 else ""
        return (
            f"SimilarityExplanation({pairs} pair(s), interactions [{pairs}, {ta}, {tb}] over {self.input!r}, "
            f"{self.kind} similarity [{values}{more}], rules={self.rules!r})"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write to a .safetensors file (tensors, and the rest as JSON in its header: no pickle)."""
        from safetensors.torch import save_file

        tensors = {name: getattr(self, name) for name in _TENSORS}
        for name in ("mask_a", "mask_b"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        header = {
            "format": FORMAT,
            "kind": self.kind,
            "rules": self.rules,
            "input": self.input,
            "stats": self.stats,
            "tokens_a": self.tokens_a,
            "tokens_b": self.tokens_b,
        }
        path = Path(path)
        save_file(
            {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()},
            str(path),
            metadata={"lrpgraph": json.dumps(header)},
        )
        return path


def read(header: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> SimilarityExplanation:
    """The SimilarityExplanation of a file `save` wrote (its header parsed, its tensors loaded)."""
    missing = [name for name in _TENSORS if name not in tensors]
    if missing:
        raise InputError(f"{path} lacks the tensor(s) {', '.join(missing)} of an lrpgraph similarity explanation")
    return SimilarityExplanation(
        **{name: tensors[name] for name in _TENSORS},
        kind=header["kind"],
        rules=header["rules"],
        mask_a=tensors.get("mask_a"),
        mask_b=tensors.get("mask_b"),
        input=header["input"],
        stats=header["stats"],
        tokens_a=header["tokens_a"],
        tokens_b=header["tokens_b"],
    )
