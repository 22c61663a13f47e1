"""Op classes and their rule kernels.

Every ATen overload that can carry relevance has an *adapter* in the op table (`table.py`), which
knows the op's argument layout, decides the node's *op class* and calls rule kernels of that class.
Every op class is declared once (`declare`), next to its kernels, with the facts the plan and the
walker read about it; its named rule *kernels* (`KERNELS`) are plain functions of tensors registered
next to their formula with `@rule`. A RuleSet picks one kernel name per node; the walker only ever
sees the resulting callables.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import RuleSetError
from .params import check_declared


@dataclass(frozen=True)
class OpClass:
    """A kind of node as LRP sees it; rule sets choose one of its kernels by name.

    absorbs: where relevance its rules do not pass on is booked — "bias" (a layer's bias when it
        has one, else "rules"), "rules", "operands" (its constant operands: "bias" for parameters,
        "constants" otherwise) or "fallback".
    exact: its rules hand on exactly the relevance they receive (when the adapter says the op
        conserves it), so the walker skips their bookkeeping.
    """

    name: str
    absorbs: str = "operands"
    exact: bool = False

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Kernel:
    """A rule kernel: `fn(R, ..., **params)`; `needs` names the activations it reads."""

    op_class: str
    name: str
    fn: Callable[..., Any]
    needs: frozenset[str]
    params: dict[str, Any]  # keyword parameter → default (inspect.Parameter.empty when required)
    check: Callable[[dict[str, Any]], None] | None = None  # relations between parameters (e.g. low < high)
    context: frozenset[str] = frozenset()  # facts of the call it takes as keywords (CONTEXT), not parameters
    linear: bool = True  # linear in R: may run on a few rows of R, or on K relevance maps at once

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments this kernel takes from `values`, defaults filled in."""
        missing = [k for k, default in self.params.items() if default is inspect.Parameter.empty and k not in values]
        if missing:
            names = ", ".join(f"'{k}'" for k in missing)
            example = ", ".join(f"{k}=..." for k in missing)
            raise RuleSetError(
                f"rule '{self.name}' for {self.op_class} needs parameter(s) {names}; "
                f"pass them, e.g. lrpgraph.preset(name, {example})"
            )
        bound = {key: values.get(key, default) for key, default in self.params.items()}
        if self.check is not None:
            try:
                self.check(bound)
            except ValueError as error:
                raise RuleSetError(f"rule '{self.name}' for {self.op_class}: {error}") from None
        return bound


CONTEXT = frozenset({"samples"})  # keywords a kernel may take from the call: the explained batch size
CLASSES: dict[str, OpClass] = {}
KERNELS: dict[str, dict[str, Kernel]] = {}
DEFAULTS: dict[str, str] = {}


def declare(name: str, *, absorbs: str = "operands", exact: bool = False) -> OpClass:
    """Declare an op class (once, where its kernels live)."""
    if name in CLASSES:
        raise RuntimeError(f"op class '{name}' is declared twice")
    if absorbs not in ("bias", "rules", "operands", "fallback"):
        raise ValueError(f"absorbs must be 'bias', 'rules', 'operands' or 'fallback', not {absorbs!r}")
    CLASSES[name] = OpClass(name, absorbs, exact)
    KERNELS.setdefault(name, {})
    return CLASSES[name]


def rule(
    op_classes: OpClass | Iterable[OpClass],
    name: str,
    *,
    needs: Iterable[str] = (),
    default: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
    linear: bool = True,
):
    """Register a kernel under `name` for one or several op classes.

    Its keyword-only parameters are the rule's parameters; each must be declared in `params.py`
    (type and range), and `check(bound params)` may test relations between them. `linear=False` for
    kernels that are not linear in R (they normalise it): they always see all of R, one map at a time.
    """
    classes = [op_classes] if isinstance(op_classes, OpClass) else list(op_classes)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        keywords = [p for p in inspect.signature(fn).parameters.values() if p.kind == inspect.Parameter.KEYWORD_ONLY]
        params = {p.name: p.default for p in keywords if p.name not in CONTEXT}
        context = frozenset(p.name for p in keywords if p.name in CONTEXT)
        check_declared(fn.__qualname__, params)
        for op_class in classes:
            if CLASSES.get(op_class.name) is not op_class:
                raise RuntimeError(f"op class '{op_class.name}' is not declared")
            KERNELS[op_class.name][name] = Kernel(
                op_class.name, name, fn, frozenset(needs), params, check, context, linear
            )
            if default:
                DEFAULTS[op_class.name] = name
        return fn

    return register


def kernel(op_class: str, name: str) -> Kernel:
    """The kernel `name` of `op_class`, or a RuleSetError listing the valid names."""
    if op_class not in KERNELS:
        raise RuleSetError(f"unknown op class '{op_class}'; known: {', '.join(sorted(KERNELS))}")
    kernels = KERNELS[op_class]
    if name not in kernels:
        raise RuleSetError(f"unknown rule '{name}' for op class '{op_class}'; known: {', '.join(sorted(kernels))}")
    return kernels[name]
