"""Symbolic shapes of a dynamic trace: every node's concrete shape per call.

A graph traced with symbolic dimensions holds sympy expressions of a few symbols (the inputs'
dynamic sizes) in its nodes' shapes. `ShapeFunction` compiles them once into Python code: given the
placeholder values of a call it binds the symbols and returns each node's concrete shape (and the
value of each symbolic-integer node), in microseconds. Which calls a graph serves: `guards.py`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP, statically_known_true
from torch.utils._sympy.printers import PythonPrinter

_NAMESPACE = {**SYMPY_INTERP, "math": math}


def expression(value: Any) -> Any:
    """A size as an int or a sympy expression (the one it was traced as, without later rewrites)."""
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        expr = value.node._expr
        return int(expr) if expr.is_Integer else expr
    return value


def known_int(value: Any) -> int | None:
    """A size as an int where the trace fixed it, even to a constant learnt after the size was made (a loop over
    range(T) fixes a length the trace first held symbolic); None where it is symbolic."""
    if isinstance(value, torch.SymInt):
        expr = value.node.expr  # with the shape environment's replacements
        return int(expr) if expr.is_Integer else None
    return value if isinstance(value, int) else None


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


def compiled(name: str, lines: list[str]) -> Any:
    """The function `name(values)` whose body is `lines` (indented), run with sympy's and math's names in scope."""
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
    """Every node's concrete shape (a tuple of ints; a tuple of them for multi-output ops; an int for
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
        self._fn = compiled("node_shapes", lines)

    def _entry(self, val: Any, printer: PythonPrinter, bound: set) -> str | None:
        if isinstance(val, (tuple, list)):
            parts = [self._entry(v, printer, bound) for v in val]
            return "(" + "".join(f"{'None' if p is None else p}, " for p in parts) + ")"  # a tuple: hashable
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
    _stand_ins: dict[fx.Node, Any] = field(default_factory=dict, repr=False)  # an unbind's T pieces made once

    def of(self, node: fx.Node) -> Any:
        """The node's shape (tuple), tuple of shapes, or integer value; KeyError if it has none."""
        return self.values[self.index[node]]

    def stand_in(self, node: fx.Node) -> Any:
        """A tensor with the node's shape and dtype but no data (device 'meta'), or the node's integer value."""
        found = self._stand_ins.get(node)
        if found is None:
            shape = self.of(node) if node in self.index else None
            found = self._stand_ins[node] = _stand_in(node.meta.get("val"), shape)
        return found


def _stand_in(val: Any, shape: Any) -> Any:
    if isinstance(val, torch.Tensor):
        return _meta(tuple(shape if shape is not None else val.shape), val.dtype)
    if isinstance(val, (tuple, list)):
        shapes = shape if shape is not None else [None] * len(val)
        return type(val)(_stand_in(v, s) for v, s in zip(val, shapes, strict=True))
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return shape
    return val


@functools.lru_cache(maxsize=8192)
def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """One shared data-free tensor per shape and dtype: a call's stand-ins are made once, not at every call."""
    return torch.empty(shape, dtype=dtype, device="meta")
