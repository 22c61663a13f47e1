"""A model's traced graphs and everything derived from each once: analyses, plans, shapes, forwards.

`traced(model, args, kwargs)` returns the TracedModel serving a call. Traces are kept per model
(never on it) and per call structure; one dynamic trace serves every shape its guard check admits,
so a new sequence length or batch size does not trace again. The cache is keyed by everything the
graph depends on (`trace/fingerprint.py`): change a module's attribute, a hook or a submodule and
the model is traced again. Tracing is serialised (torch.export is not thread-safe, and it swaps a
model's parameters while it runs): threads making a first call wait and then share one trace.

A model torch.export cannot trace (Python branching on tensor values) is, with `tracer="auto"`, recorded
instead: the ops its call ran, valid for that input only (`capture/record.py`), recorded again at every
call and never cached; it is said once per model.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from ..capture.call import prepare_call, without_autocast
from ..capture.disk import DiskCache, Uncacheable, default_directory, entry_key
from ..capture.export import export_program, to_graph
from ..capture.fingerprint import Unfingerprintable, call_structure, model_key
from ..capture.fold_batchnorm import fold_batchnorm, foldable
from ..capture.graph import Graph
from ..capture.record import CallFailed, record_program
from ..capture.shapes import GuardCheck, ShapeFunction, Shapes
from ..errors import InputError, TraceError
from ..flow.analysis import Analysis, analyse
from ..presets.ruleset import RuleSet
from ..propagate.forward import Forward
from ..propagate.plan import Plan, build_plan


class TracedModel:
    """One traced graph; its analysis, plans (per output, rule set, fallback, sources), shapes and forwards."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._lock = threading.RLock()  # lazy builds: the analysis rewrites the graph once
        self._analysis: Analysis | None = None
        self._shapes: ShapeFunction | None = None
        self._plans: dict[tuple, Plan] = {}
        self._forwards: dict[tuple, Forward] = {}
        self._folded: TracedModel | None = None

    def for_rules(self, ruleset: RuleSet) -> TracedModel:
        """This trace as the rule set wants it: with eval batch norms merged into the layers before them
        (a copy of the graph, made once) when it asks to fold them and there are any."""
        if not ruleset.fold_batchnorm or not foldable(self.graph.module.graph):
            return self
        with self._lock:
            if self._folded is None:
                folded = self.graph.copy()
                with _EXPORT_LOCK:
                    fold_batchnorm(folded.module)
                self._folded = TracedModel(folded)
            return self._folded

    @property
    def analysis(self) -> Analysis:
        with self._lock:
            if self._analysis is None:
                with _EXPORT_LOCK:  # symbolic sizes are compared: not while another thread exports (see there)
                    self._analysis = analyse(self.graph)
            return self._analysis

    def shapes(self, values: list[Any]) -> Shapes:
        """Every node's concrete shape for a call with these placeholder values (after the analysis' rewrite)."""
        with self._lock:
            if self._shapes is None:
                self.analysis  # noqa: B018 - nodes the analysis inserts need shapes too
                with _EXPORT_LOCK:
                    self._shapes = ShapeFunction(self.graph.module.graph)
        return self._shapes(values)

    def plan(
        self, output: fx.Node, ruleset: RuleSet, fallback: str | None, sources: frozenset[fx.Node] = frozenset()
    ) -> Plan:
        """The plan for this output and rule set (rebuilt when the rule set changes)."""
        key = (output, ruleset.fingerprint(), fallback, sources)
        with self._lock:
            if key not in self._plans:
                analysis = self.analysis
                with _EXPORT_LOCK:
                    self._plans[key] = build_plan(self.graph, analysis, output, ruleset, fallback, sources)
            return self._plans[key]

    def forward(self, keep: frozenset[fx.Node], stop: tuple[fx.Node, fx.Node] | None = None) -> Forward:
        """The forward that also returns the activations in `keep` (and stops before output `stop[0]`, returning
        its input `stop[1]` in its place)."""
        with self._lock:
            if (keep, stop) not in self._forwards:
                self._forwards[keep, stop] = Forward(self.graph, keep, stop)
            return self._forwards[keep, stop]


class _ModelTraces:
    """The traces of one model: by call structure, valid while the model's key stays the same."""

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
            warnings.warn(message, stacklevel=4)


_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, _ModelTraces] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
# torch.export keeps global state: one export at a time in this process. Its symbolic-shape dispatch is global
# too (not per thread): arithmetic on another graph's symbolic sizes (analyses, plans) waits for the export.
_EXPORT_LOCK = threading.Lock()


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
    if tracer == "record":
        return _record(model, args, kwargs)
    with _CACHE_LOCK:
        traces = _CACHE.setdefault(model, _ModelTraces())
    with traces.lock:
        try:
            key = model_key(model)
        except Unfingerprintable as reason:
            key = None
            traces.warn_once(f"{type(model).__name__} is traced at every call, never cached: {reason}")
        if key is None or key != traces.key:
            traces.by_structure.clear()
            traces.unexportable.clear()
            traces.key = key
        structure = call_structure(args, kwargs)
        if structure in traces.unexportable and tracer == "auto":
            return _recorded(model, args, kwargs, traces, traces.unexportable[structure])
        candidates = traces.by_structure.setdefault(structure, [])
        user = [leaf for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        broken = []
        for candidate in candidates:
            violations = candidate.graph.check.violations(user)
            if not violations:
                return candidate
            broken.append((candidate.graph, violations))
        dimensions = "all" if any(_varies_a_float_dim(v, user) for _, v in broken) else "batch-and-ids"
        disk = _disk(cache_dir) if key is not None else None
        disk_key = None if disk is None else _disk_key(model, (structure, dimensions), traces)
        with disk.locked(disk_key) if disk_key is not None else nullcontext():
            graph = _from_disk(model, args, kwargs, disk, disk_key, user)
            if graph is None:
                known = disk.unexportable(disk_key) if disk_key is not None and tracer == "auto" else None
                failure = None if known is None else TraceError(known)
                if failure is None:
                    try:
                        graph = _trace(model, args, kwargs, disk, disk_key, traces, dimensions)
                    except TraceError as error:
                        if tracer == "export":
                            raise
                        failure = error
                if failure is not None:
                    try:
                        recorded = _recorded(model, args, kwargs, traces, str(failure))
                    except CallFailed:  # the call itself fails: export's account of it says where
                        raise failure from None
                    except TraceError as unrecorded:
                        raise TraceError(f"{failure}\n  recording the call instead failed too: {unrecorded}") from None
                    if known is None and disk_key is not None and _lasting(failure):  # the call runs: the model
                        _remember_unexportable(disk, disk_key, failure, traces)  # is what export cannot trace
                    traces.unexportable[structure] = str(failure)
                    return recorded
                _report(model, graph, traces, broken)
        found = TracedModel(graph)
        if key is not None:
            candidates.append(found)
        return found


def _recorded(model: torch.nn.Module, args: tuple, kwargs: dict, traces: _ModelTraces, why: str) -> TracedModel:
    """This call recorded (never cached); the first time for a model, a warning saying why."""
    recorded = _record(model, args, kwargs)
    traces.warn_once(
        f"{type(model).__name__} is explained from a recording of each call (valid for that input only, "
        f"recorded again at every call), because torch.export could not trace it: {why}",
        about="recorded",
    )
    return recorded


def _lasting(failure: BaseException) -> bool:
    """Whether an export failure is about the model, not this moment (memory, files, an import)."""
    cause: BaseException | None = failure
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # a chain can loop back on itself
        if isinstance(cause, (MemoryError, OSError, ImportError)):
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return True


def _remember_unexportable(disk: DiskCache, key: str, failure: BaseException, traces: _ModelTraces) -> None:
    try:
        disk.mark_unexportable(key, str(failure))
    except OSError as error:  # a full or read-only cache costs later processes one export attempt, not this call
        traces.warn_once(f"lrpgraph trace cache: could not remember that export fails ({error})")


def _record(model: torch.nn.Module, args: tuple, kwargs: dict) -> TracedModel:
    with _EXPORT_LOCK, _state_restored(model), without_autocast():
        return TracedModel(to_graph(model, record_program(model, args, kwargs), args, kwargs))


def _disk(cache_dir: str | os.PathLike | None) -> DiskCache | None:
    if cache_dir is None and not os.environ.get("LRPGRAPH_CACHE_DIR"):
        return None
    return DiskCache(default_directory() if cache_dir is None else cache_dir)


def _varies_a_float_dim(violations: list[tuple], user: list[torch.Tensor]) -> bool:
    """A float input's non-batch dimension (an image size) differs from a trace's: trace them all symbolically."""
    return any(len(v) == 4 and v[2] >= 1 and user[v[1]].is_floating_point() for v in violations)


def _disk_key(model: torch.nn.Module, structure: tuple, traces: _ModelTraces) -> str | None:
    try:
        return entry_key(model_key(model, stable=True), structure)
    except Unfingerprintable as reason:
        traces.warn_once(f"{type(model).__name__}'s traces are not kept on disk: {reason}")
        return None


def _from_disk(model, args, kwargs, disk: DiskCache | None, key: str | None, user: list) -> Graph | None:
    """A trace an earlier process left on disk that serves this call, if there is one."""
    for path in disk.entries(key) if key is not None else ():
        try:
            with _EXPORT_LOCK:  # torch's program reader is one per process
                exported = disk.load(path)
        except Uncacheable:
            continue
        if not GuardCheck(exported.guards).violations(user):
            with _EXPORT_LOCK:
                return to_graph(model, exported, args, kwargs)
    return None


def _trace(model, args, kwargs, disk: DiskCache | None, key: str | None, traces: _ModelTraces, dimensions: str):
    with _EXPORT_LOCK, _state_restored(model), without_autocast():  # cached traces hold no autocast casts
        exported = export_program(model, args, kwargs, dimensions)
    if key is not None:
        try:
            disk.save(key, exported)
        except Uncacheable as reason:
            traces.warn_once(f"{type(model).__name__}'s trace is not kept on disk: {reason}")
    with _EXPORT_LOCK:  # its passes compare symbolic sizes
        return to_graph(model, exported, args, kwargs)


@contextmanager
def _state_restored(model: torch.nn.Module) -> Iterator[None]:
    """Put back any parameter or buffer object an export left replaced (by a fake tensor), whatever happened."""
    params = {name: p for name, p in model.named_parameters(remove_duplicate=False)}
    buffers = {name: b for name, b in model.named_buffers(remove_duplicate=False)}
    try:
        yield
    finally:
        for table, getter, kind in (
            (params, model.named_parameters, "_parameters"),
            (buffers, model.named_buffers, "_buffers"),
        ):
            now = dict(getter(remove_duplicate=False))
            for name, original in table.items():
                if now.get(name) is not original:
                    owner, _, leaf = name.rpartition(".")
                    getattr(model.get_submodule(owner), kind)[leaf] = original


def _report(model: torch.nn.Module, graph: Graph, traces: _ModelTraces, broken: list[tuple[Graph, list]]) -> None:
    """Say once per reason why a model is traced again: static shapes only, or a dimension its code fixes."""
    name = type(model).__name__
    if graph.static_reason is not None:
        traces.warn_once(
            f"{name} could not be traced with dynamic shapes ({graph.static_reason}); it is traced again "
            "for every new input shape"
        )
        return
    for previous, violations in broken:
        fixed = {f.input: f for f in previous.check.fixed}
        for violation in violations:
            if len(violation) == 4:  # (input, index, dim, traced size): a dimension the trace holds static
                forced = fixed.get(f"{violation[0]}.shape[{violation[2]}]")
                if forced is not None:  # asked symbolic, but the model's code fixed it
                    traces.warn_once(
                        f"{name} fixes {forced.input} in its code ({forced.where}: {forced.line}); "
                        "each new size of it is traced again",
                        about=(forced.input,),
                    )
            else:
                condition, where, dims = violation
                origin = f" (its code at {where})" if where else ""
                traces.warn_once(
                    f"{name} is traced for {condition} only{origin}; other calls are traced again", about=dims
                )


def trace(model: torch.nn.Module, inputs: Any) -> Graph:
    """Export `model` called on `inputs` into a Graph (cached): what `explain` propagates relevance over."""
    args, kwargs = prepare_call(model, inputs)
    return traced(model, args, kwargs).graph


def clear_cache(model: torch.nn.Module | None = None) -> None:
    """Forget traced graphs (of one model, or all)."""
    with _CACHE_LOCK:
        if model is None:
            _CACHE.clear()
        else:
            _CACHE.pop(model, None)
