"""The TracedModel serving a call: found in memory, else on disk, else traced — exported, or recorded.

A call structure's first trace is static (half the time of a symbolic export); at the first call it does not
serve, a dynamic trace is made that serves every shape its guards admit, so later lengths and batch sizes do not
trace again (`model_traces.py` keeps them per model and call structure, `disk_traces.py` for later processes);
`shapes_vary()` asks for the dynamic trace from the first call (`explain_many`). Tracing is
serialised (`export_lock.py`): threads making a first call wait and then share one trace. A model torch.export
cannot trace (Python branching on tensor values) is, with tracer="auto", recorded instead: the ops its call ran,
valid for that input only (`capture/record.py`), recorded again at every call and never cached; said once per model.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..capture.call import prepare_call
from ..capture.fingerprint import call_structure
from ..capture.graph import Graph
from ..capture.quantized import dequantized_view, refuse_disagreeing_kernels, refuse_unfaithful_quantization
from ..capture.record import CallFailed
from ..errors import InputError, TraceError
from . import retrace
from .disk_traces import DiskTraces
from .model_traces import traces_of
from .traced_model import TracedModel
from .tracers import export, graph_of, lasting, record

TRACERS = ("auto", "export", "record")


def traced(
    model: torch.nn.Module,
    args: tuple,
    kwargs: dict,
    cache_dir: str | os.PathLike | None = None,
    tracer: str = "auto",
) -> TracedModel:
    """The TracedModel serving `model(*args, **kwargs)`, traced on first use (of this model state and structure).

    cache_dir: also keep traces on disk there, for later processes (default: $LRPGRAPH_CACHE_DIR if set).
    tracer: "export" (torch.export: one graph for every input), "record" (the ops of this call only, see
        `capture/record.py`), or "auto": export, and record the models export cannot trace (said once).
    """
    if tracer not in TRACERS:
        raise InputError(f"tracer must be one of {', '.join(map(repr, TRACERS))}, not {tracer!r}")
    model = dequantized_view(model)  # torch.ao dynamic quantized layers as float layers (BoundCall reads it too)
    if tracer == "record":
        refuse_unfaithful_quantization(model)
        refuse_disagreeing_kernels(model)
        return TracedModel(record(model, args, kwargs))
    return Tracing(model, args, kwargs, tracer).run(cache_dir)


_SHAPES_VARY: contextvars.ContextVar[bool] = contextvars.ContextVar("lrpgraph_shapes_vary", default=False)


@contextmanager
def shapes_vary() -> Iterator[None]:
    """Calls made inside trace with symbolic sizes from the first (a corpus's batches differ in size and length)."""
    token = _SHAPES_VARY.set(True)
    try:
        yield
    finally:
        _SHAPES_VARY.reset(token)


def trace(model: torch.nn.Module, inputs: Any) -> Graph:
    """Export `model` called on `inputs` into a Graph (cached): what `explain` propagates relevance over."""
    args, kwargs = prepare_call(model, inputs)
    return traced(model, args, kwargs).graph


@dataclass(frozen=True)
class Unexportable:
    """Why torch.export cannot trace a call: its failure now, or (`known`) the marker an earlier process left."""

    failure: TraceError
    known: bool = False


class Tracing:
    """One call's way to its trace, step by step: a kept trace that serves it, else one on disk, else torch.export
    (saved to disk), else (tracer="auto") a recording of the call."""

    def __init__(self, model: torch.nn.Module, args: tuple, kwargs: dict, tracer: str):
        self.model, self.args, self.kwargs, self.tracer = model, args, kwargs, tracer
        self.traces = traces_of(model)
        self.structure = call_structure(args, kwargs)
        self.user = pytree.tree_leaves((args, kwargs))  # every leaf: a trace's conditions index them all

    def run(self, cache_dir: str | os.PathLike | None) -> TracedModel:
        """The steps in order, holding the model's lock (and, while it looks on disk and traces, the entry's)."""
        refuse_unfaithful_quantization(self.model)  # a scan of the modules, before they are fingerprinted
        with self.traces.lock:
            cacheable = self.traces.refresh(self.model)
            if self.tracer == "auto" and self.structure in self.traces.unexportable:
                return self.recorded(self.traces.unexportable[self.structure])
            served, broken = self.traces.serving(self.structure, self.user)
            if served is not None:
                return served
            refuse_disagreeing_kernels(self.model)  # once, before export and the recorder both fail
            dimensions = retrace.dimensions_to_trace(broken, self.user, _SHAPES_VARY.get())
            entry = (self.structure, dimensions)
            disk = DiskTraces.open(cache_dir, self.model, entry, self.traces) if cacheable else None
            with disk.locked() if disk is not None else nullcontext():
                graph = disk.load(self.model, self.args, self.kwargs, self.user) if disk is not None else None
                if graph is None:
                    graph = self.exported(disk, dimensions)
                if isinstance(graph, Unexportable):
                    return self.recorded_instead(graph, disk)
            retrace.report(self.model, graph, self.traces, broken)
            return self.traces.keep(self.structure, TracedModel(graph))

    def exported(self, disk: DiskTraces | None, dimensions: str) -> Graph | Unexportable:
        """A new trace, kept on disk; or why torch.export cannot trace the call (with tracer="export": raised)."""
        known = disk.unexportable() if disk is not None and self.tracer == "auto" else None
        if known is not None:
            return Unexportable(TraceError(known), known=True)
        try:
            exported = export(self.model, self.args, self.kwargs, dimensions)
        except TraceError as failure:
            if self.tracer == "export":
                raise
            return Unexportable(failure)
        if disk is not None:
            disk.save(self.model, exported)
        return graph_of(self.model, exported, self.args, self.kwargs)

    def recorded_instead(self, unexportable: Unexportable, disk: DiskTraces | None) -> TracedModel:
        """The call recorded because torch.export cannot trace it; once the recording shows the call itself runs,
        remembered for this process and (unless the failure passes: memory, files, an import) on disk."""
        failure = unexportable.failure
        try:
            recorded = self.recorded(str(failure))
        except CallFailed:  # the call itself fails: export's account of it says where
            raise failure from None
        except TraceError as unrecorded:
            raise TraceError(f"{failure}\n  recording the call instead failed too: {unrecorded}") from None
        if disk is not None and not unexportable.known and lasting(failure):
            disk.remember_unexportable(failure)
        self.traces.unexportable[self.structure] = str(failure)
        return recorded

    def recorded(self, why: str) -> TracedModel:
        """This call recorded (never cached); the first time for a model, a warning saying why."""
        recorded = TracedModel(record(self.model, self.args, self.kwargs))
        self.traces.warn_once(
            f"{type(self.model).__name__} is explained from a recording of each call (valid for that input only, "
            f"recorded again at every call), because torch.export could not trace it: {why}",
            about="recorded",
        )
        return recorded
