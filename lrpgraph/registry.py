"""The one table from ATen ops to LRP rules.

Every ATen overload that can carry relevance maps to an *adapter* (`OPS`), which knows the op's
argument layout, decides the node's *op class* ("linear", "conv", "add", "reindex", …) and calls
rule kernels of that class. Every op class has named rule *kernels* (`KERNELS`), plain functions
of tensors registered next to their formula with `@rule`. A RuleSet picks one kernel name per
node; the walker only ever sees the resulting callables.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import RuleSetError


@dataclass(frozen=True)
class Kernel:
    """A rule kernel: `fn(R, ..., **params)`; `needs` names the activations it reads."""

    op_class: str
    name: str
    fn: Callable[..., Any]
    needs: frozenset[str]
    params: dict[str, Any]  # keyword parameter → default (inspect.Parameter.empty when required)

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments this kernel takes from `values`, defaults filled in."""
        bound = {}
        for key, default in self.params.items():
            if key in values:
                bound[key] = values[key]
            elif default is inspect.Parameter.empty:
                raise RuleSetError(
                    f"rule '{self.name}' for {self.op_class} needs parameter '{key}'; "
                    f"pass it, e.g. lrpgraph.preset(name, {key}=...)"
                )
            else:
                bound[key] = default
        return bound


KERNELS: dict[str, dict[str, Kernel]] = {}
DEFAULTS: dict[str, str] = {}
OPS: dict[Any, Any] = {}


def rule(op_classes: str | Iterable[str], name: str, *, needs: Iterable[str] = (), default: bool = False):
    """Register a kernel under `name` for one or several op classes."""
    classes = [op_classes] if isinstance(op_classes, str) else list(op_classes)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY
        }
        for op_class in classes:
            KERNELS.setdefault(op_class, {})[name] = Kernel(op_class, name, fn, frozenset(needs), params)
            if default:
                DEFAULTS[op_class] = name
        return fn

    return register


def register_ops(adapter: Any, *targets: Any) -> None:
    """Map each ATen overload (or Python callable such as operator.getitem) to its adapter.

    A target may also be a qualified name ("transformers.grouped_mm_fallback.default") for custom
    ops that exist only once a third-party library has registered them.
    """
    for target in targets:
        OPS[target] = adapter


def lookup(target: Any) -> Any:
    """The adapter of an op, by the op itself or by its qualified name; None if it has no rule."""
    adapter = OPS.get(target)
    if adapter is None and not isinstance(target, str):
        adapter = OPS.get(str(target))
    return adapter


def kernel(op_class: str, name: str) -> Kernel:
    """The kernel `name` of `op_class`, or a RuleSetError listing the valid names."""
    if op_class not in KERNELS:
        raise RuleSetError(f"unknown op class '{op_class}'; known: {', '.join(sorted(KERNELS))}")
    kernels = KERNELS[op_class]
    if name not in kernels:
        raise RuleSetError(f"unknown rule '{name}' for op class '{op_class}'; known: {', '.join(sorted(kernels))}")
    return kernels[name]


def op_classes() -> list[str]:
    return sorted(KERNELS)


def table() -> list[tuple[str, str, str]]:
    """(op, op class family, adapter) rows: the whole op table, for docs and coverage reports."""
    return sorted((str(t), type(a).__name__, getattr(a, "family", "")) for t, a in OPS.items())
