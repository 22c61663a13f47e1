"""absLRP's contrastive map: its two passes (seeds e_y and (1 − e_y)/(C − 1), walked as two maps) made Nmax(P − Q)."""

from __future__ import annotations

from typing import Any

import torch

from ..ops.rescale import nmax
from ..ops.sparse import RowSparse
from ..propagate.walker import WalkResult


def contrast(result: WalkResult, seed: Any, batch: int) -> tuple[WalkResult, torch.Tensor]:
    """Nmax(P − Q) per sample from the two maps' relevance, and the seed P − Q."""

    def difference(r: Any) -> Any:
        r = r.dense() if isinstance(r, RowSparse) else r
        return nmax(r[0] - r[1], batch)

    inputs = {node: difference(r) for node, r in result.inputs.items()}
    latent = {node: difference(r) for node, r in result.latent.items()}
    both = seed.dense() if isinstance(seed, RowSparse) else seed
    return WalkResult(inputs, latent, result.absorbed, result.by_rule, result.by_node), both[0] - both[1]
