"""Why a model is traced again for a call its traces do not serve, and what the new trace keeps symbolic.

A call structure's first trace is static (unless its caller says shapes will vary: `explain_many`); a call its
conditions (`capture/guards.py`) do not admit makes the next trace symbolic in the batch and ids' lengths, and a
float input's non-batch dimension (an image size) that differs makes it symbolic in every dimension; a dimension
the model's own code fixes, or a guard it imposes, is said once per model, as is a model traced with static shapes
only.
"""

from __future__ import annotations

from typing import Any

import torch

from ..capture.graph import Graph
from ..capture.guards import Violation
from .model_traces import ModelTraces

Broken = list[tuple[Graph, list[Violation]]]  # each kept trace of the structure, and what the call violates of it


def dimensions_to_trace(broken: Broken, user: list[Any], shapes_vary: bool = False) -> str:
    """What a new trace keeps symbolic: nothing for a call structure's first trace (a static export takes about half
    the time of a symbolic one, and a single call needs no more) unless the caller says its shapes vary; "all" once a
    float input's non-batch dimension (an image size) differs from a trace's; else "batch-and-ids"."""
    if not broken:
        return "batch-and-ids" if shapes_vary else "static"
    for _, violations in broken:
        for v in violations:
            if v.fixed_dim is not None and v.fixed_dim[1] >= 1 and user[v.fixed_dim[0]].is_floating_point():
                return "all"
    return "batch-and-ids"


def report(model: torch.nn.Module, graph: Graph, traces: ModelTraces, broken: Broken) -> None:
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
            if violation.fixed_dim is not None:  # a dimension the trace holds static
                forced = fixed.get(violation.dims[0])
                if forced is not None:  # asked symbolic, but the model's code fixed it
                    traces.warn_once(
                        f"{name} fixes {forced.input} in its code ({forced.where}: {forced.line}); "
                        "each new size of it is traced again",
                        about=(forced.input,),
                    )
            else:
                origin = f" (its code at {violation.where})" if violation.where else ""
                traces.warn_once(
                    f"{name} is traced for {violation.condition} only{origin}; other calls are traced again",
                    about=violation.dims,
                )
