"""The two tracers, run safely: torch.export and the recording of one call (`capture/record.py`).

One runs at a time in this process (`export_lock.py`), without autocast (a cached trace holds no autocast casts),
and every parameter or buffer object the tracer replaced is put back, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import fx

from ..capture.call import without_autocast
from ..capture.export import Exported, export_program, to_graph
from ..capture.graph import Graph, is_float, leading
from ..capture.random_state import random_state_kept
from ..capture.record import record_program
from ..ops.table import spec
from .export_lock import EXPORT_LOCK


def unruled(node: fx.Node) -> bool:
    """A node whose op the op table does not know and that may carry relevance (a float result of float operands):
    torch decomposes it at capture where it can, into ops that have rules. Ops making masks or constants, and ops the
    table knows without a rule (a statistic a normalisation holds constant), are left as they are."""
    if node.op != "call_function" or spec(node.target) is not None or not is_float(leading(node.meta.get("val"))):
        return False
    return any(is_float(n.meta.get("val")) for n in node.all_input_nodes)


def export(model: torch.nn.Module, args: tuple, kwargs: dict, dimensions: str) -> Exported:
    """`model(*args, **kwargs)` exported, these dimensions symbolic (`capture/export.py`); TraceError if it cannot."""
    with EXPORT_LOCK, state_restored(model), without_autocast():
        return export_program(model, args, kwargs, dimensions, unruled)


def graph_of(model: torch.nn.Module, exported: Exported, args: tuple, kwargs: dict) -> Graph:
    """The Graph of an exported program (its passes compare symbolic sizes: under the export lock)."""
    with EXPORT_LOCK:
        return to_graph(model, exported, args, kwargs)


def record(model: torch.nn.Module, args: tuple, kwargs: dict) -> Graph:
    """The ops this call runs, as a Graph valid for this call only; CallFailed if the call itself fails."""
    with EXPORT_LOCK, state_restored(model), without_autocast(), random_state_kept():
        return to_graph(model, record_program(model, args, kwargs, unruled), args, kwargs)


def lasting(failure: BaseException) -> bool:
    """Whether an export failure is about the model, not this moment (memory, files, an import)."""
    cause: BaseException | None = failure
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # a chain can loop back on itself
        if isinstance(cause, (MemoryError, OSError, ImportError)):
            return False
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return True


@contextmanager
def state_restored(model: torch.nn.Module) -> Iterator[None]:
    """Put back any parameter or buffer object a tracer left replaced (by a fake tensor), whatever happened."""
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
