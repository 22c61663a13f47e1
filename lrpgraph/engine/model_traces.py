"""The traces kept in memory: per model (never on it), per call structure, valid while the model's key is the same.

The key covers everything a graph depends on (`capture/fingerprint.py`): change a module's attribute, a hook or a
submodule and the model's traces are forgotten. A model with no key (a value that cannot be fingerprinted) is
traced at every call. Each model's warnings are given once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from ..caller import warn
from ..capture.fingerprint import Unfingerprintable, model_key
from ..capture.graph import Graph
from ..capture.guards import Violation
from .traced_model import TracedModel


class ModelTraces:
    """The traces of one model: by call structure, the structures torch.export failed on, the warnings given."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.key: tuple | None = None
        self.by_structure: dict[tuple, list[TracedModel]] = {}
        self.unexportable: dict[tuple, str] = {}  # call structure → why torch.export failed (tracer="auto")
        self.warned: set[Any] = set()

    def warn_once(self, message: str, about: Any = None) -> None:
        """Warn the first time for each subject (`about`, or the message itself)."""
        key = message if about is None else about
        if key not in self.warned:
            self.warned.add(key)
            warn(message)

    def refresh(self, model: torch.nn.Module) -> bool:
        """Forget every trace if the model changed since they were made; False for a model with no key (it is then
        traced at every call, never cached: said once)."""
        try:
            key = model_key(model)
        except Unfingerprintable as reason:
            key = None
            self.warn_once(f"{type(model).__name__} is traced at every call, never cached: {reason}")
        if key is None or key != self.key:
            self.by_structure.clear()
            self.unexportable.clear()
            self.key = key
        return key is not None

    def serving(
        self, structure: tuple, user: list[Any]
    ) -> tuple[TracedModel | None, list[tuple[Graph, list[Violation]]]]:
        """The kept trace serving a call with these user tensors, or None and what each trace of the structure
        violates (the reasons to trace again)."""
        broken = []
        for candidate in self.by_structure.get(structure, []):
            violations = candidate.graph.check.violations(user)
            if not violations:
                return candidate, []
            broken.append((candidate.graph, violations))
        return None, broken

    def keep(self, structure: tuple, found: TracedModel) -> TracedModel:
        """Keep a new trace for later calls of the structure (unless the model has no key)."""
        if self.key is not None:
            self.by_structure.setdefault(structure, []).append(found)
        return found


_TRACES: weakref.WeakKeyDictionary[torch.nn.Module, ModelTraces] = weakref.WeakKeyDictionary()
_TRACES_LOCK = threading.Lock()


def traces_of(model: torch.nn.Module) -> ModelTraces:
    """The model's traces (none yet, the first time)."""
    with _TRACES_LOCK:
        return _TRACES.setdefault(model, ModelTraces())


def clear_cache(model: torch.nn.Module | None = None) -> None:
    """Forget traced graphs (of one model, or all)."""
    with _TRACES_LOCK:
        if model is None:
            _TRACES.clear()
        else:
            _TRACES.pop(model, None)
