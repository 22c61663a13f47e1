"""Adapters: how one family of ATen ops meets the rule kernels of its op class.

An adapter reads the op's (schema-normalised) arguments, tells which op class a node is given
which operands carry relevance, says which arguments a kernel must read, and calls the kernel,
returning relevance keyed by argument name (a list for list arguments such as `cat`'s tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ..registry import Kernel

Args = dict[str, Any]
Relevant = dict[str, Any]  # argument name → bool, or list[bool] for list arguments


@dataclass
class Call:
    """One rule application: the node's op class, kernel and parameters, R, arguments, output, role."""

    op_class: str
    kernel: Kernel
    params: dict[str, Any]
    R: Any
    args: Args
    out: Any
    relevant: Relevant
    role: str | None = None
    lead: int = 0  # leading relevance dims (K maps carried at once) the adapter handles itself

    def run(self, *inputs: Any) -> Any:
        """kernel(R, *inputs, **params)."""
        return self.kernel.fn(self.R, *inputs, **self.params)


class Adapter:
    """Base class: one relevant data argument `data`, kernels called as fn(R, x, out, **params)."""

    family = "generic"
    data = "self"
    always: tuple[str, ...] = ()  # arguments read by every kernel (weights, biases, index tensors)

    def __init__(self, op_class: str, data: str | None = None, family: str | None = None):
        self._op_class = op_class
        if data is not None:
            self.data = data
        if family is not None:
            self.family = family

    def op_class(self, args: Args, relevant: Relevant, role: str | None) -> str:
        return self._op_class

    def needs(self, op_class: str, kernel: Kernel, args: Args, relevant: Relevant) -> tuple[set[str], bool]:
        """(argument names whose values the kernel reads, whether it reads the output)."""
        names = {name for name in self.always if args.get(name) is not None}
        if "x" in kernel.needs:
            names.add(self.data)
        return names, "out" in kernel.needs

    def batched(self, op_class: str) -> bool:
        """Whether apply() takes R with a leading dim of K maps itself (otherwise the walker vmaps it)."""
        return False

    def row_sparse(self, op_class: str) -> bool:
        """Whether apply() takes a RowSparse R (a seed nonzero in a few rows) as it is."""
        return False

    def apply(self, call: Call) -> dict[str, Any]:
        return {self.data: call.run(call.args[self.data], call.out)}


class LayerAdapter(Adapter):
    """Ops linear in one data argument: `build(args)` gives the LinearMap the kernels work on."""

    always = ("weight", "bias")

    def __init__(self, op_class: str, data: str, build: Callable[[Args], Any], family: str):
        super().__init__(op_class, data, family)
        self.build = build

    def apply(self, call):
        return {self.data: call.run(call.args[self.data], self.build(call.args), call.out)}


def is_tensor(value: Any) -> bool:
    """An argument that is (or, at plan time, will be) a tensor rather than a Python constant."""
    return isinstance(value, (fx.Node, torch.Tensor))
