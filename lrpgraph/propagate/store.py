"""The activation store: every activation a rule reads is a promise the store resolves.

A promise resolves from memory when the forward kept the value, from an offloaded host copy when
offloading is on, or by recomputing the forward sub-graph from the nearest kept values (the
schedule's recipe) — once: the result is held and shared until its last reader has run.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import fx

from ..capture.shapes import Shapes
from ..ops.sparse import RowSparse
from .recompute import Recipes


def tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, RowSparse):  # a deferred head's output, held at the rows a seed reads
        return [value.values]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors(v)]
    return []


def _to(value: Any, device: torch.device, pin: bool) -> Any:
    if isinstance(value, torch.Tensor):
        if value.device == device:
            return value.clone()
        copy = value.to(device, non_blocking=True)
        return copy.pin_memory() if pin else copy
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device, pin) for v in value)
    if isinstance(value, RowSparse):
        return RowSparse(_to(value.index, device, pin), _to(value.values, device, pin), value.shape, value.maps)
    return value


class ActivationStore:
    """Kept, offloaded and recomputable activations by node; placeholder values (inputs, parameters) are free.

    `shapes` gives every node's concrete shape for this call: shape-only stand-ins for values a rule
    does not read, and the values of symbolic-integer nodes. `peak_bytes` counts values held on the
    compute device, each storage once (views of one tensor kept for several nodes count once);
    `recomputed_nodes` and `recompute_seconds` what promises cost.
    """

    def __init__(
        self,
        placeholders: dict[fx.Node, Any],
        shapes: Shapes,
        recipes: Recipes | None = None,
        offload: bool = False,
    ):
        self._fixed = placeholders
        self.shapes = shapes
        self._held: dict[fx.Node, Any] = {}
        self._offloaded: dict[fx.Node, tuple[Any, torch.device]] = {}
        self._storages: dict[int, list[int]] = {}  # storage pointer → [bytes, references]
        self.recipes = recipes or Recipes({})
        self.offload = offload
        self.held_bytes = 0
        self.peak_bytes = 0
        self.offloaded_bytes = 0
        self.recomputed_nodes = 0
        self.recompute_seconds = 0.0

    def put(self, node: fx.Node, value: Any) -> None:
        """A value the forward keeps (moved to host memory when offloading)."""
        if self.offload:
            device = next((t.device for t in tensors(value)), torch.device("cpu"))
            host = _to(value, torch.device("cpu"), pin=device.type == "cuda")
            self._offloaded[node] = (host, device)
            self.offloaded_bytes += sum(t.numel() * t.element_size() for t in tensors(host))
        else:
            self._hold(node, value)

    def stand_in(self, node: fx.Node) -> Any:
        """A data-free tensor with the node's shape and dtype for this call (an int for symbolic-integer nodes)."""
        return self.shapes.stand_in(node)

    def get(self, node: fx.Node) -> Any:
        """Resolve a promise: held, offloaded, or recomputed — the caller cannot tell which."""
        if node in self._fixed:
            return self._fixed[node]
        if node in self._held:
            return self._held[node]
        if node in self._offloaded:
            host, device = self._offloaded[node]
            value = _to(host, device, pin=False) if device.type != "cpu" else host
            self._hold(node, value)
            return value
        if isinstance(node.meta.get("val"), (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return self.shapes.of(node)
        if node in self.recipes:
            return self._recompute(node)
        raise RuntimeError(f"activation of '{node.name}' was neither kept nor recomputable")

    def release(self, node: fx.Node, keep_stored: bool = False) -> None:
        """Free a value after its last reader; keep_stored: a value the forward stored stays for another walk
        (held on the device, or its host copy when offloading)."""
        if keep_stored and node not in self._offloaded:
            return
        if not keep_stored:
            self._offloaded.pop(node, None)
        value = self._held.pop(node, None)
        for t in tensors(value):
            key = t.untyped_storage().data_ptr()
            entry = self._storages[key]
            entry[1] -= 1
            if entry[1] == 0:
                self.held_bytes -= entry[0]
                del self._storages[key]

    def _hold(self, node: fx.Node, value: Any) -> None:
        self._held[node] = value
        for t in tensors(value):
            key = t.untyped_storage().data_ptr()
            entry = self._storages.setdefault(key, [t.untyped_storage().nbytes(), 0])
            if entry[1] == 0:
                self.held_bytes += entry[0]
            entry[1] += 1
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def _recompute(self, target: fx.Node) -> Any:
        """Run the recipe for `target` as generated code; the members other recipes or rules read are held."""
        started = time.perf_counter()
        held = frozenset(n for n in self.recipes.recipes[target] if n in self._held)
        program = self.recipes.program(target, held)
        inputs = [self.get(n) for n in program.inputs]
        with torch.inference_mode():
            values = program.run(*inputs)
        del inputs
        self.recomputed_nodes += len(program.nodes)
        for node, value in zip(program.outputs, values, strict=True):
            if node not in self._held:
                self._hold(node, value)
        value = self._held[target]
        device = next((t.device for t in tensors(value)), None)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        self.recompute_seconds += time.perf_counter() - started
        return value
