"""The checks that make a trace-cache entry safe to read: it may come from anyone who could write the directory.

torch.export's reader would evaluate symbolic expressions (`sympy.sympify`), import what a pytree spec names and
look up any dotted `torch.` path a node calls. Every such string is checked here as the program's JSON is read
(`PROGRAM_READER`) and as its guards are parsed (`parse_expression`): only numbers, symbols, operators and sympy's
and torch's size functions; only output types registered in this process, with nothing to import; only registered
operators and the size arithmetic torch writes. Anything else is `Refused`.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree
from torch._export.serde import schema

from .program_json import SchemaReader


class Refused(Exception):
    """An untrusted program names code to run, something to import, or an operator unknown here."""


# Symbolic expressions reach sympy.sympify, which evaluates them: let through numbers, quoted names,
# operators and sympy's and torch's function names only (no '.', '[' or dunder: nothing to reach with).
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?(?:e[+-]?\d+)?)|('[A-Za-z0-9_.+-]*')|([A-Za-z][A-Za-z0-9_]*)"
    r"|(\*\*|//|<=|>=|==|!=|[-+*/%(),<>&|~=]))"
)
_SYMBOL = re.compile(r"^[a-z]+\d+$")
_NAMES = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "LessThan",
        "StrictGreaterThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
        "BooleanTrue",
        "BooleanFalse",
        "true",
        "false",
        "True",
        "False",
        "Infinity",
        "NegativeInfinity",
        "oo",
        "zoo",
        "nan",
        "NaN",
        "One",
        "Zero",
        "NegativeOne",
        "Half",
        "Tuple",
        "floor",
        "ceiling",
        "sqrt",
        "Piecewise",
        "ExprCondPair",
        "positive",
        "negative",
        "integer",
        "real",
        "nonnegative",
        "nonpositive",
        "finite",
        "infinite",
        "commutative",
        "precision",
        "zero",
        "extended_real",
        "even",
        "odd",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "IntInfinity",
        "NegativeIntInfinity",
    ]
)


@functools.lru_cache(maxsize=4096)
def safe_expression(text: str) -> bool:
    """Whether a symbolic expression holds only numbers, symbols, operators and allowed function names."""
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            return text[position:].strip() == ""
        name = match.group(3)
        if name is not None and not (_SYMBOL.match(name) or name in _NAMES):
            return False
        position = match.end()
    return True


def parse_expression(text: str) -> Any:
    """A stored symbolic expression back as sympy, once it is known to be safe to evaluate."""
    if not safe_expression(text):
        raise Refused(f"refusing symbolic expression {text[:80]!r}")
    from torch.utils._sympy import functions

    names = {n: getattr(functions, n) for n in dir(functions) if n in _NAMES}
    return sympy.sympify(text, locals=names)


def _check_expression(expression: schema.SymExpr) -> None:
    if not safe_expression(expression.expr_str):
        raise Refused(f"refusing symbolic expression {expression.expr_str[:80]!r}")


def _check_signature(signature: schema.ModuleCallSignature) -> None:
    for spec in (signature.in_spec, signature.out_spec):
        check_spec(spec)


def check_spec(text: str) -> None:
    """A pytree spec may name only types registered in this process (HF ModelOutputs: once transformers is
    imported) and nothing to import: no enum in a context (`__enum__`, which torch imports by name, however its
    JSON spells it), no type whose context torch reads with its own function (defaultdict imports a module)."""
    try:
        _, tree = json.loads(text)
    except (ValueError, TypeError):
        raise Refused("unreadable pytree spec") from None
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, dict):
            raise Refused("unreadable pytree spec")
        nodes.extend(node.get("children_spec") or [])
        name = node.get("type")
        if name is None:
            continue
        kind = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name)
        if kind is None:
            raise Refused(f"output type not registered in this process: {name}")
        reader = pytree.SUPPORTED_SERIALIZED_TYPES[kind].from_dumpable_context
        if reader is not None and getattr(reader, "__name__", "") != "_namedtuple_deserialize":
            raise Refused(f"refusing a pytree spec of {name}, whose context would be read by its own code")
        if reader is None and node.get("context") is not None and _names_an_enum(json.loads(node["context"])):
            raise Refused("refusing a pytree spec that imports modules")


def _names_an_enum(value: Any) -> bool:
    if isinstance(value, dict):
        return "__enum__" in value or any(_names_an_enum(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_an_enum(v) for v in value)
    return False


def _check_operator(node: schema.Node) -> None:
    """A node may call only registered ATen-style operators and the symbolic-size arithmetic torch writes as
    `_operator.*`, `math.*` and `torch.sym_*` (torch's reader would resolve any dotted `torch.` path)."""
    if not allowed_operator(node.target):
        raise Refused(f"operator not registered in this process, or not one a trace calls: {node.target}")


_SIZE_OPERATORS = frozenset(
    [f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
                                "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "lshift", "rshift")]
    + [f"math.{n}" for n in ("trunc", "ceil", "floor", "sqrt")]
    + [f"torch.{n}" for n in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt",
                              "_sym_sqrt", "sym_sum")]
)  # fmt: skip
_FOUND: set[str] = set()  # operators found registered (one not found now may be registered later)


def allowed_operator(target: str) -> bool:
    """Whether a node may call `target`: the size arithmetic torch writes, or an operator registered here."""
    if target in _SIZE_OPERATORS or target in _FOUND:
        return True
    if not target.startswith("torch.ops."):
        return False
    found: Any = torch
    for part in target.split(".")[1:]:
        found = getattr(found, part, None)
        if found is None:
            return False
    if isinstance(found, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        _FOUND.add(target)
        return True
    return False


# What the deserializer would evaluate (symbolic expressions), import (pytree specs) or look up (operators),
# checked on every such object as the program's JSON is read.
PROGRAM_READER = SchemaReader(
    {schema.SymExpr: _check_expression, schema.ModuleCallSignature: _check_signature, schema.Node: _check_operator}
)
