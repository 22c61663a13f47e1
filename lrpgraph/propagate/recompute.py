"""Recipes as code: each recomputation the schedule calls for runs as one generated Python function, not node by
node through an interpreter — the rotary products, masks and views a walk recomputes are hundreds of small ops,
where an interpreter's per-node work costs more than the ops. Like torch.fx's code generation, with each value
deleted after its last use, but a fraction of a millisecond to make (a recipe's code is made on first use)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import fx


@dataclass(frozen=True)
class Program:
    """A recipe run from `inputs` (values read from outside it, and members already held), returning `outputs`:
    its target first, then the members the store holds for later (other recipes' targets, shared values)."""

    inputs: tuple[fx.Node, ...]
    outputs: tuple[fx.Node, ...]
    run: Callable[..., tuple]
    nodes: tuple[fx.Node, ...]  # the nodes it computes


class Recipes:
    """A schedule's recipes and what several of them compute (`shared`), with their programs made on first use:
    one per target and set of its members already held when it runs (in a walk, always the same one)."""

    def __init__(self, recipes: dict[fx.Node, list[fx.Node]], shared: frozenset[fx.Node] = frozenset()):
        self.recipes, self.shared = recipes, shared
        self._programs: dict[tuple[fx.Node, frozenset[fx.Node]], Program] = {}

    def __contains__(self, node: fx.Node) -> bool:
        return node in self.recipes

    def program(self, target: fx.Node, held: frozenset[fx.Node]) -> Program:
        """The program computing `target` when the members `held` are already at hand."""
        key = (target, held)
        found = self._programs.get(key)
        if found is None:
            recipe = [n for n in self.recipes[target] if n not in held]
            keep = [target, *(n for n in recipe if n is not target and (n in self.recipes or n in self.shared))]
            found = self._programs[key] = generated(recipe, keep)
        return found


def generated(nodes: list[fx.Node], outputs: list[fx.Node]) -> Program:
    """`nodes` (in graph order) as one Python function of the values they read from outside, returning `outputs`."""
    members = set(nodes)
    names: dict[fx.Node, str] = {}
    inputs: list[fx.Node] = []
    namespace: dict[str, Any] = {}
    last_use = {source: i for i, n in enumerate(nodes) for source in n.all_input_nodes}
    for n in nodes:
        for source in n.all_input_nodes:
            if source not in members and source not in names:
                names[source] = f"a{len(inputs)}"
                inputs.append(source)
    body = []
    for i, n in enumerate(nodes):
        names[n] = f"v{i}"
        namespace[f"f{i}"] = n.target
        args = ", ".join(
            [*(_code(a, names, namespace) for a in n.args)]
            + [f"{k}={_code(v, names, namespace)}" for k, v in n.kwargs.items()]
        )
        body.append(f"    v{i} = f{i}({args})")
        gone = [names[s] for s in dict.fromkeys(n.all_input_nodes) if last_use.get(s) == i and s not in outputs]
        if gone:
            body.append(f"    del {', '.join(gone)}")
    body.append(f"    return ({''.join(names[n] + ', ' for n in outputs)})")
    source = f"def recipe({', '.join(names[n] for n in inputs)}):\n" + "\n".join(body) + "\n"
    exec(compile(source, f"<recipe of {outputs[0].name}>", "exec"), namespace)
    return Program(tuple(inputs), tuple(outputs), namespace["recipe"], tuple(nodes))


def _code(value: Any, names: dict[fx.Node, str], namespace: dict[str, Any]) -> str:
    """An argument as code: a node's variable, a list or tuple of codes, a plain literal, or a named constant."""
    if isinstance(value, fx.Node):
        return names[value]
    if isinstance(value, list):
        return "[" + "".join(_code(v, names, namespace) + ", " for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(_code(v, names, namespace) + ", " for v in value) + ")"
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return repr(value)
    name = f"c{len(namespace)}"
    namespace[name] = value
    return name
