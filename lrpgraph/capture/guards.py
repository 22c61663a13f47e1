"""Which calls a traced graph serves: the conditions it was traced under, as data and as a compiled check.

A trace holds under conditions torch.export found while tracing: dimensions it fixed, ranges of the
symbolic ones, equalities between inputs, shape guards. `GuardSpec` keeps them as data (a trace kept on
disk loses its ShapeEnv, not these); `GuardCheck` compiles them into a function listing the ones a call
violates (`Violation`): a graph serves exactly the calls for which that list is empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch import fx
from torch.utils._sympy.printers import PythonPrinter

from .shapes import compiled, expression, shape_env

_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass(frozen=True)
class Fixed:
    """A dimension the trace fixed although it was asked to keep it dynamic, and where the model did so."""

    input: str  # e.g. "input_ids.shape[1]"
    size: int
    where: str  # file:line in the model's code (or torch's, when no user frame is known)
    line: str


@dataclass(frozen=True)
class Violation:
    """A condition of a trace that a call breaks: a dimension the trace holds fixed, or a guard on input dimensions."""

    condition: str  # readable, over input dimensions: "input_ids.shape[1] == 8", "input_ids.shape[1] <= 64"
    dims: tuple[str, ...]  # the input dimensions it involves
    where: str = ""  # where in the model's code it arose ('' when unknown or inside torch)
    fixed_dim: tuple[int, int] | None = None  # (user input index, dim) of a dimension the trace holds fixed


@dataclass
class GuardSpec:
    """The conditions a trace holds under, as data (a trace kept on disk loses its ShapeEnv, not these).

    bindings: (symbol, input name, user input index, dim) of each dynamic dimension; static: (input
    name, user input index, dim, size) of each dimension the graph holds fixed; conditions: (sympy
    condition over the bound symbols, where in the model's code it arose) — ranges (a lower bound of 2
    is torch's 0/1-specialisation artefact and is not enforced, as torch.export does not enforce it),
    equalities between inputs, shape guards; fixed: the dimensions asked dynamic that the model's code
    fixed, and where.
    """

    bindings: list[tuple[str, str, int, int]]
    static: list[tuple[str, int, int, int]]
    conditions: list[tuple[Any, str]]
    fixed: list[Fixed]

    @classmethod
    def of_trace(cls, graph: fx.Graph, user: list[fx.Node], names: list[str]) -> GuardSpec:
        bindings, static, bound = [], [], set()
        for i, (node, name) in enumerate(zip(user, names, strict=True)):
            val = node.meta.get("val")
            for d, size in enumerate(val.shape if isinstance(val, torch.Tensor) else ()):
                expr = expression(size)
                if isinstance(expr, int):
                    static.append((name, i, d, expr))
                elif isinstance(expr, sympy.Symbol) and expr not in bound:
                    bindings.append((str(expr), name, i, d))
                    bound.add(expr)
        env = shape_env(graph)
        if env is None:
            return cls(bindings, static, [], [])
        conditions: list[tuple[Any, str]] = []
        for symbol in sorted(bound, key=str):
            bounds = env.var_to_range.get(symbol)
            where = _origin(env, symbol)
            if bounds is not None and isinstance(bounds.lower, sympy.Integer) and int(bounds.lower) > 2:
                conditions.append((sympy.Ge(symbol, bounds.lower), where))
            if bounds is not None and isinstance(bounds.upper, sympy.Integer):
                conditions.append((sympy.Le(symbol, bounds.upper), where))
        for symbol, replacement in env.replacements.items():
            if symbol in bound and replacement.free_symbols <= bound and not replacement.is_number:
                conditions.append((sympy.Eq(symbol, replacement), ""))
        for guard in env.guards:
            if guard.expr.free_symbols and guard.expr.free_symbols <= bound:
                where, line, inside = _location(guard.sloc)
                conditions.append((guard.expr, "" if inside else f"{where}: {line}"))
        return cls(bindings, static, conditions, _fixed(env, bound))

    def to_json(self) -> dict:
        return {
            "bindings": self.bindings,
            "static": self.static,
            "conditions": [[sympy.srepr(c), where] for c, where in self.conditions],
            "fixed": [vars(f) for f in self.fixed],
        }

    @classmethod
    def from_json(cls, data: dict, parse: Any) -> GuardSpec:
        """`parse(text)` turns a stored condition back into sympy (the disk cache validates it first)."""
        return cls(
            [tuple(b) for b in data["bindings"]],
            [tuple(s) for s in data["static"]],
            [(parse(c), where) for c, where in data["conditions"]],
            [Fixed(**f) for f in data["fixed"]],
        )


class GuardCheck:
    """A GuardSpec compiled into one function of the user inputs' values, listing what a call violates."""

    def __init__(self, spec: GuardSpec):
        self.spec = spec
        printer = PythonPrinter()
        names = {symbol: f"{name}.shape[{d}]" for symbol, name, _, d in spec.bindings}
        self._known: list[Violation] = []  # every violation there can be; the compiled function lists their indices
        lines = ["    bad = []"]
        lines += [f"    {symbol} = values[{i}].shape[{d}]" for symbol, _, i, d in spec.bindings]
        for name, i, d, size in spec.static:
            dim = f"{name}.shape[{d}]"
            lines.append(f"    if values[{i}].shape[{d}] != {size}: bad.append({len(self._known)})")
            self._known.append(Violation(f"{dim} == {size}", (dim,), fixed_dim=(i, d)))
        # once one condition failed, a later one may divide by zero: stop at the first
        for condition, where in spec.conditions:
            readable = condition.xreplace({s: sympy.Symbol(names.get(str(s), str(s))) for s in condition.free_symbols})
            dims = tuple(sorted(names.get(str(s), str(s)) for s in condition.free_symbols))
            lines.append(f"    if not bad and not ({printer.doprint(condition)}): bad.append({len(self._known)})")
            self._known.append(Violation(str(readable), dims, where))
        self._fn = compiled("violations", [*lines, "    return bad"])

    @property
    def fixed(self) -> list[Fixed]:
        return self.spec.fixed

    def violations(self, values: list[Any]) -> list[Violation]:
        """What these user-input values break (empty: the graph serves the call)."""
        return [self._known[i] for i in self._fn(values)]


def _fixed(env: Any, bound: set) -> list[Fixed]:
    """Dimensions asked dynamic that the trace fixed to a constant, with the first location outside torch."""
    found = []
    for symbol, sources in env.var_to_sources.items():
        value = env.replacements.get(symbol)
        if symbol in bound or value is None or not value.is_number or not sources:
            continue
        locations = [_location(env.replacements_slocs[s]) for s in _chain(env, symbol) if s in env.replacements_slocs]
        locations += [_location(g.sloc) for g in env.guards if symbol in g.expr.free_symbols]
        user = [loc for loc in locations if not loc[2]] or locations or [("?", "", True)]
        where, line, _ = user[0]
        found.append(Fixed(_source_name(sources[0].name), int(value), where, line))
    return found


def _origin(env: Any, symbol: sympy.Symbol) -> str:
    """Where in the model's code a symbol was first constrained ('' when only torch constrained it)."""
    for guard in env.guards:
        if symbol in guard.expr.free_symbols:
            where, line, inside = _location(guard.sloc)
            if not inside:
                return f"{where}: {line}"
    return ""


def _chain(env: Any, symbol: sympy.Symbol) -> list[sympy.Symbol]:
    """The symbol and the symbols it was replaced by on its way to a constant."""
    chain, current = [symbol], env.replacements.get(symbol)
    while isinstance(current, sympy.Symbol) and current not in chain:
        chain.append(current)
        current = env.replacements.get(current)
    return chain


def _location(sloc: Any) -> tuple[str, str, bool]:
    """(file:line in function, source line, whether the frame is inside torch) of a guard's location."""
    frame = getattr(sloc, "framework_loc", None)
    if frame is None or isinstance(frame, str):
        return (str(sloc), "", True)
    inside = os.path.abspath(frame.filename).startswith(_TORCH_DIR)
    return (f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}", (frame.line or "").strip(), inside)


def _source_name(name: str) -> str:
    """L['kwargs']['input_ids'].size()[1] → input_ids.shape[1]."""
    text = name.replace("L['kwargs']", "").replace("L['args']", "args").replace(".size()", ".shape")
    for quote in ("['", "']"):
        text = text.replace(quote, "." if quote == "['" else "")
    return text.lstrip(".")
