"""A model's traces of one call structure in the trace cache on disk (`capture/disk_cache.py`), for later processes.

Used when `cache_dir=` is given or $LRPGRAPH_CACHE_DIR is set, for models with a key that survives the process.
Processes sharing the directory hold the structure's lock while they look it up and trace it, so one traces it and
the others read its entry; a marker says torch.export cannot trace the structure, so that later processes record it
at once.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from ..capture.disk_cache import DiskCache, default_directory, entry_key
from ..capture.export import Exported, to_graph
from ..capture.fingerprint import Unfingerprintable, model_key
from ..capture.graph import Graph
from ..capture.serialise import Uncacheable
from ..errors import InputError
from .export_lock import EXPORT_LOCK
from .model_traces import ModelTraces


class DiskTraces:
    """One entry key of the disk cache: its traces, its lock and its marker."""

    def __init__(self, cache: DiskCache, key: str, traces: ModelTraces):
        self.cache, self.key, self.traces = cache, key, traces

    @classmethod
    def open(
        cls, cache_dir: str | os.PathLike | None, model: torch.nn.Module, structure: tuple, traces: ModelTraces
    ) -> DiskTraces | None:
        """The entry of this model and call structure; None without a cache directory, or for a model whose key
        does not survive the process (said once)."""
        if cache_dir is None and not os.environ.get("LRPGRAPH_CACHE_DIR"):
            return None
        directory = default_directory() if cache_dir is None else Path(cache_dir).expanduser()
        if directory.exists() and not directory.is_dir():
            named = "$LRPGRAPH_CACHE_DIR" if cache_dir is None else "cache_dir"
            raise InputError(f"{named} must be a directory for the trace cache, but {directory} is a file")
        cache = DiskCache(directory)
        try:
            return cls(cache, entry_key(model_key(model, stable=True), structure), traces)
        except Unfingerprintable as reason:
            traces.warn_once(f"{type(model).__name__}'s traces are not kept on disk: {reason}")
            return None

    def locked(self) -> AbstractContextManager[None]:
        """Hold the key against other processes while looking it up and tracing it."""
        return self.cache.locked(self.key)

    def load(self, model: torch.nn.Module, args: tuple, kwargs: dict, user: list[Any]) -> Graph | None:
        """A trace an earlier process left that serves this call, if there is one."""
        for path in self.cache.entries(self.key):
            try:
                with EXPORT_LOCK:  # torch's program reader is one per process
                    exported = self.cache.load(path)
            except Uncacheable:
                continue
            if not exported.check.violations(user):
                with EXPORT_LOCK:
                    return to_graph(model, exported, args, kwargs)
        return None

    def save(self, model: torch.nn.Module, exported: Exported) -> None:
        """Keep a new trace (before its graph is rewritten); one that cannot be kept is said once."""
        try:
            self.cache.save(self.key, exported)
        except Uncacheable as reason:
            self.traces.warn_once(f"{type(model).__name__}'s trace is not kept on disk: {reason}")

    def unexportable(self) -> str | None:
        """Why torch.export failed on this key in an earlier process whose call was then recorded, if it did."""
        return self.cache.unexportable(self.key)

    def remember_unexportable(self, failure: BaseException) -> None:
        """Mark the key as one torch.export cannot trace; a full or read-only cache costs later processes one export
        attempt, not this call."""
        try:
            self.cache.mark_unexportable(self.key, str(failure))
        except OSError as error:
            self.traces.warn_once(f"lrpgraph trace cache: could not remember that export fails ({error})")
