"""Explanations on disk: tensors in safetensors, everything else as JSON in its header — no pickle, so a
file from anyone can be loaded without running code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

FORMAT = "lrpgraph.explanation/1"
_GROUPS = ("relevance", "latent", "conditional", "rho", "conservation.inputs")
_SINGLE = ("output", "seed", "conservation.seed", "conservation.positional", "positional", "combined")


def write(ex: Any, path: str | os.PathLike) -> Path:
    """Write an Explanation to `path` (a .safetensors file); the seed is stored dense."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    groups = (ex.relevance, ex.latent, ex.conditional, ex.rho, ex.conservation.inputs)
    for group, values in zip(_GROUPS, groups, strict=True):
        for name, value in values.items():
            tensors[f"{group}/{name}"] = value
    singles = (ex.output, ex.seed, ex.conservation.seed, ex.conservation.positional, ex.positional, ex.combined)
    for name, value in zip(_SINGLE, singles, strict=True):
        if value is not None:
            tensors[name] = value
    header = {
        "format": FORMAT,
        "rules": ex.rules,
        "absorbed": ex.conservation.absorbed,
        "fallbacks": ex.fallbacks,
        "stats": ex.stats,
        "tokens": ex.tokens,
        "unreached": ex.unreached,
        "target_names": ex.target_names,
    }
    try:
        metadata = {"lrpgraph": json.dumps(header)}
    except TypeError as error:
        raise InputError(f"this explanation's stats or fallbacks are not JSON: {error}") from None
    path = Path(path)
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def read_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict, Path]:
    """(the lrpgraph header, the tensors on `device`, the path) of a file an lrpgraph result wrote."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"path {str(path)!r} is not a file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            text = (f.metadata() or {}).get("lrpgraph")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    except SafetensorError as error:
        raise InputError(f"{path} is not a safetensors file: {error}") from None
    if text is None:
        raise InputError(f"{path} holds no lrpgraph explanation (no 'lrpgraph' entry in its header)")
    return json.loads(text), tensors, path


def read(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Explanation's fields but its conservation, the Conservation's fields) of a file `write` wrote."""
    missing = [key for key in ("output", "seed", "conservation.seed") if key not in tensors]
    if missing:
        raise InputError(f"{path} lacks the tensor(s) {', '.join(missing)} of an lrpgraph explanation")
    groups: dict[str, dict[str, torch.Tensor]] = {group: {} for group in _GROUPS}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        if group in groups and name:
            groups[group][name] = value
    explanation = {
        "relevance": groups["relevance"],
        "output": tensors["output"],
        "seed_relevance": tensors["seed"],
        "rules": meta["rules"],
        "latent": groups["latent"],
        "conditional": groups["conditional"],
        "rho": groups["rho"],
        "positional": tensors.get("positional"),
        "combined": tensors.get("combined"),
        "fallbacks": meta["fallbacks"],
        "stats": meta["stats"],
        "tokens": meta.get("tokens"),
        "unreached": meta.get("unreached") or {},
        "target_names": meta.get("target_names", []),
    }
    conservation = {
        "seed": tensors["conservation.seed"],
        "inputs": groups["conservation.inputs"],
        "absorbed": {str(k): float(v) for k, v in meta["absorbed"].items()},
        "positional": tensors.get("conservation.positional"),
    }
    return explanation, conservation
