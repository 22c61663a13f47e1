"""The activation store: values the walk will read, held from the forward until their last reader."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx


def tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors(v)]
    return []


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
    """Kept activations by node, plus placeholder values (inputs, parameters), which cost nothing to hold.

    Bytes are counted per storage, so views of one tensor kept for several nodes count once.
    """

    def __init__(self, placeholders: dict[fx.Node, Any]):
        self._fixed = placeholders
        self._held: dict[fx.Node, Any] = {}
        self._storages: dict[int, list[int]] = {}  # storage pointer → [bytes, references]
        self.held_bytes = 0
        self.peak_bytes = 0

    def put(self, node: fx.Node, value: Any) -> None:
        self._held[node] = value
        for t in tensors(value):
            key = t.untyped_storage().data_ptr()
            entry = self._storages.setdefault(key, [t.untyped_storage().nbytes(), 0])
            if entry[1] == 0:
                self.held_bytes += entry[0]
            entry[1] += 1
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
        for t in tensors(value):
            entry = self._storages[t.untyped_storage().data_ptr()]
            entry[1] -= 1
            if entry[1] == 0:
                self.held_bytes -= entry[0]
                del self._storages[t.untyped_storage().data_ptr()]
