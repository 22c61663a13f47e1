"""A Quantus `explain_func`: numpy in, numpy out, Quantus's calling convention (model, inputs, targets, **kwargs).

quantus.Sparseness()(model, x, y, explain_func=lrpgraph.integrations.explain_func,
                     explain_func_kwargs={"rules": "epsilon-plus"})
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..api.explain import explain
from ..errors import InputError


def explain_func(
    model: torch.nn.Module,
    inputs: np.ndarray,
    targets: np.ndarray | int | None,
    *,
    rules: Any = "epsilon",
    device: str | torch.device | None = None,
    reduce_axes: tuple[int, ...] | None = None,
    **options: Any,
) -> np.ndarray:
    """Relevance of `inputs` [batch, …] for `targets` (one class per sample), shaped like `inputs`.

    rules and options are `lrpgraph.explain`'s; device defaults to the model's; reduce_axes sums over
    those axes keeping them (as Quantus's own explain does, e.g. (1,) for one channel).
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    x = _tensor(inputs, model, device)
    target = None if targets is None else torch.as_tensor(np.asarray(targets)).reshape(-1).long()
    if target is not None and target.numel() == 1 and x.shape[0] != 1:
        target = target.expand(x.shape[0])
    if target is not None and target.numel() != x.shape[0]:
        raise InputError(f"targets must hold one class per sample ({x.shape[0]}), not {target.numel()}")
    ex = explain(model, x, target, rules, **options)
    relevance = next(iter(ex.relevance.values())).detach()
    if reduce_axes:
        relevance = relevance.sum(dim=tuple(reduce_axes), keepdim=True)
    return relevance.float().cpu().numpy()


def _tensor(inputs: Any, model: torch.nn.Module, device: str | torch.device | None) -> torch.Tensor:
    """`inputs` as a tensor in the model's floating dtype on `device` (default: where the model's weights are)."""
    if not isinstance(inputs, (np.ndarray, torch.Tensor)):
        raise InputError(f"inputs must be a numpy array or a tensor, not {type(inputs).__name__}")
    x = torch.as_tensor(inputs)
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = weight.dtype if weight is not None else torch.get_default_dtype()
    where = device if device is not None else (weight.device if weight is not None else "cpu")
    return x.to(device=where, dtype=dtype if x.is_floating_point() else x.dtype)
