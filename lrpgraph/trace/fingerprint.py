"""What a traced graph is specialised to: the call's structure and values, and the model's make-up."""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree


def signature(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
    """Input structure, shapes, dtypes, devices, other values, and the model's fingerprint."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    parts: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), leaf.dtype, str(leaf.device)))
        else:
            parts.append((type(leaf).__name__, repr(leaf)))
    parts.append(model_fingerprint(model))
    return tuple(parts)


def model_fingerprint(model: torch.nn.Module) -> tuple:
    """What of the model a traced graph depends on: its modules, hooks, parameter shapes and dtypes, config."""
    modules = tuple(
        (name, id(m), type(m).__qualname__, len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.named_modules()
    )
    params = tuple((name, tuple(p.shape), str(p.dtype), str(p.device)) for name, p in model.named_parameters())
    config = getattr(model, "config", None)
    settings = repr(sorted((k, repr(v)) for k, v in vars(config).items())) if config is not None else ""
    return modules, params, settings
