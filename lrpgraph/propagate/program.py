"""The walk as code: a plan's reverse walk generated as one straight-line Python function, as torch.fx generates a
module's forward. Relevance waiting at each node is a local variable, each step a call, each release a line — no
interpreter loop, no per-node lookups of what to record, where a walk ends or what to free. Made once per plan,
schedule and recorded set (it holds no shapes: one program serves every call the plan serves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from .plan import Plan
from .schedule import Schedule

WalkProgram = Callable[[Any, Any], None]  # program(walker, seed): fills the walker's inputs, latent and ledger


def walk_program(
    plan: Plan, schedule: Schedule, record: frozenset[fx.Node], start: fx.Node | None = None
) -> WalkProgram:
    """The program for this plan, schedule and recorded set, generated on first use and kept with the schedule.

    start: the node the seed is placed at (default the plan's output): a walk from a latent node carries only the
    relevance that passes through it (conditional relevance)."""
    key = (record, start)
    program = schedule.programs.get(key)
    if program is None:
        program = schedule.programs[key] = _generated(plan, schedule, record, plan.output if start is None else start)
    return program


def _generated(plan: Plan, schedule: Schedule, record: frozenset[fx.Node], start: fx.Node) -> WalkProgram:
    index: dict[fx.Node, int] = {}

    def var(node: fx.Node) -> int:
        return index.setdefault(node, len(index))

    namespace: dict[str, Any] = {"add": added}
    lines: list[str] = []
    for node in plan.order:
        i = var(node)
        namespace[f"N{i}"] = node
        step = plan.steps.get(node)
        lines.append(f"    # {node.name}")
        body: list[str] = []
        if node in record:
            body.append(f"latent[N{i}] = r{i}")
        if node.op == "placeholder" or node in plan.sources:
            body.append(f"inputs[N{i}] = r{i}")
        elif step is None:
            body.append(f"missing(N{i})")
        else:
            namespace[f"S{i}"] = step
            body.append(f"x = step(S{i}, r{i})")
            for k, (_, _, receiver) in enumerate(step.receivers):
                j = var(receiver)
                body.append(f"r{j}, o{j} = add(r{j}, o{j}, x[{k}])")
            body.append("x = None")  # a result added into an earlier sum is garbage now, not during the next step
        lines.append(f"    if r{i} is not None:")
        lines += [f"        {b}" for b in body]
        lines.append(f"    r{i} = None")
        for value in schedule.released.get(node, ()):
            j = len(namespace)
            namespace[f"V{j}"] = value
            lines.append(f"    release(V{j}, {value in schedule.keep})")
    # a start no step reads (relevance can reach no input from it: `ex.unreached` says why) walks nothing
    first = [f"    r{index[start]}, o{index[start]} = seed, False"] if start in index else []
    names = [f"r{i}" for i in range(len(index))] + [f"o{i}" for i in range(len(index))]
    start = [f"    {' = '.join(names[n : n + 32])} = None" for n in range(0, len(names), 32)]
    head = [
        "def walk(w, seed):",
        "    latent, inputs, step, release, missing = w.latent, w.inputs, w.step, w.release, w.missing",
    ]
    source = "\n".join(head + start + first + lines) + "\n"
    exec(compile(source, "<walk>", "exec"), namespace)
    return namespace["walk"]


def added(current: Any, owned: bool | None, r: Any) -> tuple[Any, bool | None]:
    """Relevance `r` added to what waits at a node: (the sum, whether the walk made it and may add into it)."""
    if r is None:
        return current, owned
    if current is None:
        return r, False
    if isinstance(current, list):
        return [a if b is None else b if a is None else a + b for a, b in zip(current, r, strict=True)], False
    if owned and current.dtype == torch.promote_types(current.dtype, r.dtype):
        return current.add_(r), True
    return current + r, True
