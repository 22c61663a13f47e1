"""Symbolic shapes of a dynamic trace: which inputs a graph serves, and every node's concrete shape per call.

A graph traced with symbolic dimensions holds sympy expressions of a few symbols (the inputs'
dynamic sizes) in its nodes' shapes. `ShapeFunction` compiles them once into Python code: given the
placeholder values of a call it binds the symbols and returns each node's concrete shape (and the
value of each symbolic-integer node), in microseconds. `GuardCheck` compiles the conditions the
trace was made under (dimensions it fixed, ranges, equalities, shape guards) into a function that
lists the ones a call violates: a graph serves exactly the calls for which that list is empty.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP, statically_known_true
from torch.utils._sympy.printers import PythonPrinter

_TORCH_DIR = os.path.dirname(torch.__file__)
_NAMESPACE = {**SYMPY_INTERP, "math": math}


def expression(value: Any) -> Any:
    """A size as an int or a sympy expression (the one it was traced as, without later rewrites)."""
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        expr = value.node._expr
        return int(expr) if expr.is_Integer else expr
    return value


def same_size(a: Any, b: Any) -> bool:
    """Whether two sizes (ints or SymInts) are provably equal, without adding guards to the trace."""
    if isinstance(a, torch.SymInt) or isinstance(b, torch.SymInt):  # one expression is equal without asking
        return a is b or expression(a) == expression(b) or bool(statically_known_true(a == b))
    return a == b


def same_shape(a: Any, b: Any) -> bool:
    """Whether two shapes are provably equal (see `same_size`)."""
    return len(a) == len(b) and all(same_size(x, y) for x, y in zip(a, b, strict=True))


def above_one(size: Any) -> bool:
    """Whether a size can be more than one: a symbolic dimension, or an int > 1."""
    return isinstance(size, torch.SymInt) or size > 1


def shape_env(graph: fx.Graph) -> Any:
    """The ShapeEnv of a dynamic trace (None for a static one)."""
    for node in graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        mode = getattr(val, "fake_mode", None)
        if mode is not None and mode.shape_env is not None:
            return mode.shape_env
    return None


def _bindings(placeholders: list[fx.Node]) -> tuple[list[str], set[sympy.Symbol]]:
    """Lines binding every plain-symbol dimension of a placeholder to the call's value."""
    lines, bound = [], set()
    for i, node in enumerate(placeholders):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for d, size in enumerate(val.shape):
            expr = expression(size)
            if isinstance(expr, sympy.Symbol) and expr not in bound:
                lines.append(f"    {expr} = values[{i}].shape[{d}]")
                bound.add(expr)
    return lines, bound


def _code(expr: Any, printer: PythonPrinter) -> str:
    return str(expr) if isinstance(expr, int) else printer.doprint(expr)


def _compile(name: str, lines: list[str]) -> Any:
    namespace = dict(_NAMESPACE)
    exec(f"def {name}(values):\n" + "\n".join(lines) + "\n", namespace)
    return namespace[name]


def value_dependent_shape(graph: fx.Graph) -> fx.Node | None:
    """The first node whose shape depends on tensor values (an unbacked size, such as nonzero's), if any."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    for node in graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and free_unbacked_symbols(val.shape):
            return node
    return None


class ShapeFunction:
    """Every node's concrete shape (a tuple of ints; a list of them for multi-output ops; an int for
    symbolic-integer nodes) from a call's placeholder values; constant for static graphs."""

    def __init__(self, graph: fx.Graph):
        placeholders = list(graph.find_nodes(op="placeholder"))
        lines, bound = _bindings(placeholders)
        printer = PythonPrinter()
        entries: list[str] = []
        self.index: dict[fx.Node, int] = {}
        for node in graph.nodes:
            code = self._entry(node.meta.get("val"), printer, bound)
            if code is not None:
                self.index[node] = len(entries)
                entries.append(code)
        lines.append("    return (" + "".join(f"{e}, " for e in entries) + ")")
        self._fn = _compile("node_shapes", lines)

    def _entry(self, val: Any, printer: PythonPrinter, bound: set) -> str | None:
        if isinstance(val, (tuple, list)):
            parts = [self._entry(v, printer, bound) for v in val]
            return "[" + ", ".join("None" if p is None else p for p in parts) + "]"
        if isinstance(val, torch.Tensor):
            dims = [expression(d) for d in val.shape]
            if not all(isinstance(d, int) or d.free_symbols <= bound for d in dims):
                return None
            return "(" + "".join(f"{_code(d, printer)}, " for d in dims) + ")"
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            expr = expression(val)
            return _code(expr, printer) if isinstance(expr, int) or expr.free_symbols <= bound else None
        return None

    def __call__(self, values: list[Any]) -> Shapes:
        return Shapes(self.index, self._fn(values))


@dataclass
class Shapes:
    """The concrete shapes of one call."""

    index: dict[fx.Node, int]
    values: tuple

    def of(self, node: fx.Node) -> Any:
        """The node's shape (tuple), list of shapes, or integer value; KeyError if it has none."""
        return self.values[self.index[node]]

    def stand_in(self, node: fx.Node) -> Any:
        """A tensor with the node's shape and dtype but no data (device 'meta'), or the node's integer value."""
        return _stand_in(node.meta.get("val"), self.of(node) if node in self.index else None)


def _stand_in(val: Any, shape: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return torch.empty(shape if shape is not None else val.shape, dtype=val.dtype, device="meta")
    if isinstance(val, (tuple, list)):
        shapes = shape if shape is not None else [None] * len(val)
        return type(val)(_stand_in(v, s) for v, s in zip(val, shapes, strict=True))
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return shape
    return val


@dataclass(frozen=True)
class Fixed:
    """A dimension the trace fixed although it was asked to keep it dynamic, and where the model did so."""

    input: str  # e.g. "input_ids.shape[1]"
    size: int
    where: str  # file:line in the model's code (or torch's, when no user frame is known)
    line: str


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
        lines = ["    bad = []"]
        lines += [f"    {symbol} = values[{i}].shape[{d}]" for symbol, _, i, d in spec.bindings]
        lines += [
            f"    if values[{i}].shape[{d}] != {size}: bad.append(({name!r}, {i}, {d}, {size}))"
            for name, i, d, size in spec.static
        ]
        # once one condition failed, a later one may divide by zero: stop at the first
        names = {symbol: f"{name}.shape[{d}]" for symbol, name, _, d in spec.bindings}
        for condition, where in spec.conditions:
            readable = condition.xreplace({s: sympy.Symbol(names.get(str(s), str(s))) for s in condition.free_symbols})
            report = (str(readable), where, tuple(sorted(names.get(str(s), str(s)) for s in condition.free_symbols)))
            lines.append(f"    if not bad and not ({printer.doprint(condition)}): bad.append({report!r})")
        self._fn = _compile("violations", [*lines, "    return bad"])

    @property
    def fixed(self) -> list[Fixed]:
        return self.spec.fixed

    def violations(self, values: list[Any]) -> list[tuple]:
        """What these user-input values break: (input name, input index, dim, traced size), or (condition,
        where in the model's code it arose, the input dimensions it involves)."""
        return self._fn(values)


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
