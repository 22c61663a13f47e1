"""The activation store: values the walk will read, held from the forward until their last reader."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx


def nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    return 0


def meta_value(node: fx.Node) -> Any:
    """A stand-in with the node's shape and dtype but no data (device 'meta')."""
    return _meta(node.meta.get("val"))


def _meta(val: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return torch.empty(val.shape, dtype=val.dtype, device="meta")
    if isinstance(val, (tuple, list)):
        return type(val)(_meta(v) for v in val)
    if isinstance(val, torch.SymInt):
        return int(val)
    return val


class ActivationStore:
    """Kept activations by node, plus placeholder values (inputs, parameters), which cost nothing to hold."""

    def __init__(self, placeholders: dict[fx.Node, Any]):
        self._fixed = placeholders
        self._held: dict[fx.Node, Any] = {}
        self.held_bytes = 0
        self.peak_bytes = 0

    def put(self, node: fx.Node, value: Any) -> None:
        self._held[node] = value
        self.held_bytes += nbytes(value)
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def get(self, node: fx.Node) -> Any:
        if node in self._fixed:
            return self._fixed[node]
        try:
            return self._held[node]
        except KeyError:
            raise RuntimeError(f"activation of '{node.name}' was not kept for the walk") from None

    def release(self, node: fx.Node) -> None:
        value = self._held.pop(node, None)
        if value is not None:
            self.held_bytes -= nbytes(value)
