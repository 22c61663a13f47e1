"""Adapters: how one family of ATen ops meets the rule kernels of its op classes.

An adapter reads the op's (schema-normalised) arguments, tells which op class a node is given
which operands carry relevance, says which arguments a kernel must read, and calls the kernel,
returning relevance keyed by argument name (a list for list arguments such as `cat`'s tensors).
Its class attributes are the facts about the ATen ops it serves that graph analyses and the
memory schedule read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import fx

from .gradient import call_op
from .registry import Kernel, OpClass
from .table import NO_FACTS

Args = dict[str, Any]
Relevant = dict[str, Any]  # argument name → bool, or list[bool] for list arguments


class RoleKind(Enum):
    GATE = "gate"  # act(gate)·up, routing weights: a factor that comes from an activation or softmax
    ATTENTION = "attention"  # attention probabilities times values
    RESIDUAL = "residual"  # a sum whose one term (the shortcut) is an ancestor of the other (the branch)


@dataclass(frozen=True)
class Role:
    """What a node is, found on the graph. A product of two relevant tensors: `operand` names the argument holding
    the gate or the probabilities (`index`: its position in a list argument, such as einsum's tensors). A residual
    sum: `operand` names the shortcut, `branch` (a `branch.Branch`) the sub-graph computing the other term from it."""

    kind: RoleKind
    operand: str
    index: int | None = None
    branch: Any = None


@dataclass
class RuleCall:
    """One application of a rule to a node: the kernel and its parameters, R, arguments, output, role.

    `lead` leading relevance dims (K maps) the adapter handles itself; `maps` how many relevance maps
    the walk carries (rules size their working blocks by it); `vmapped` whether the call runs under
    vmap (no data-dependent shortcuts then); `samples` the explained batch size.
    """

    op_class: OpClass
    kernel: Kernel
    params: dict[str, Any]
    R: Any
    args: Args
    out: Any
    relevant: Relevant
    role: Role | None = None
    lead: int = 0
    maps: int = 1
    vmapped: bool = False
    samples: int = 1
    op: Any = None  # the ATen op the node calls (adapters serving several ops look facts up by it)
    values: dict[Any, Any] = field(default_factory=dict)  # graph values the node's role reads (`role_reads`), by node

    def run(self, *inputs: Any) -> Any:
        """kernel(R, *inputs, **params)."""
        return self.run_on(self.R, *inputs)

    def run_on(self, R: Any, *inputs: Any) -> Any:
        """kernel(R, *inputs, **params) for another R (a block of rows of this call's R)."""
        context = {"samples": self.samples} if "samples" in self.kernel.context else {}
        return self.kernel.fn(R, *inputs, **self.params, **context)


class Adapter:
    """Base class: one relevant data argument `data`, kernels called as fn(R, x, out, **params)."""

    data = "self"
    always: tuple[str, ...] = ()  # arguments read by every kernel (weights, biases, index tensors)
    bias: str | None = None  # the argument holding a bias term, if the op has one
    facts = NO_FACTS  # what the ops it serves share (their table entries start from these)

    def __init__(self, op_class: OpClass, data: str | None = None):
        self._op_class = op_class
        if data is not None:
            self.data = data

    def op_class(self, args: Args, relevant: Relevant, role: Role | None) -> OpClass:
        return self._op_class

    def needs(self, op_class: OpClass, kernel: Kernel, args: Args, relevant: Relevant) -> tuple[set[str], bool]:
        """(argument names whose values the kernel reads, whether it reads the output)."""
        names = {name for name in self.always if args.get(name) is not None}
        if "x" in kernel.needs:
            names.add(self.data)
        return names, "out" in kernel.needs

    def constant_terms(self, args: Args) -> bool:
        """Whether the op adds a term that is not a tensor operand (a Python scalar, a log-normaliser)."""
        return False

    def conserves(self, args: Args, relevant: Relevant) -> bool:
        """Whether an exact op class's rule hands on all it receives for these operands."""
        return True

    def batched(self, op_class: OpClass) -> bool:
        """Whether apply() takes R with a leading dim of K maps itself (otherwise the walker vmaps it)."""
        return False

    def row_sparse(self, op_class: OpClass) -> bool:
        """Whether apply() takes a RowSparse R (a seed nonzero in a few rows) as it is."""
        return False

    def apply(self, call: RuleCall) -> dict[str, Any]:
        return {self.data: call.run(call.args[self.data], call.out)}

    def role_reads(self, kernel: Kernel, role: Role | None) -> tuple[fx.Node, ...]:
        """Graph values the kernel reads through the node's role, beyond the op's own arguments (a residual's
        shortcut and the inputs of its branch); the walker hands them over in `RuleCall.values`. None by default."""
        return ()

    def with_statistics_held(self, op: Any, args: Args) -> Any:
        """The op on `args` with every statistic it takes of its input held constant — a norm's mean and variance,
        a softmax's max and denominator — so that its Jacobian is the one a residual's branch is differentiated
        with (`branch.py`: ∂y/∂x = w/σ elementwise for a layer norm, p for a softmax). Most ops: the op itself."""
        return call_op(op, args)

    def replay(self, call: Any, replace: dict[Any, Any], detach: tuple = ()) -> Any:
        """For `verify` (`gradient.py`): the op on the replay's arguments as its rules see it — statistics they
        hold constant detached. Most ops: the op itself."""
        return call.run(replace, detach)

    def layer_keys(self, args: Args, relevant: Relevant) -> tuple[Any, Any, Any]:
        """(data, weight, bias) arguments of a layer (weight and bias None where the op has none), for the
        gradient forms of rules that modify weights."""
        return self.data, None, None


class LayerAdapter(Adapter):
    """Ops linear in one data argument: `build(args)` gives the LinearMap the kernels work on."""

    always = ("weight", "bias")
    bias = "bias"

    def __init__(self, op_class: OpClass, data: str, build: Callable[[Args], Any]):
        super().__init__(op_class, data)
        self.build = build

    def apply(self, call):
        return {self.data: call.run(call.args[self.data], self.build(call.args), call.out)}

    def layer_keys(self, args, relevant):
        weight = "weight" if "weight" in args else None
        return self.data, weight, self.bias if self.bias in args else None


def is_tensor(value: Any) -> bool:
    """An argument that is (or, at plan time, will be) a tensor rather than a Python constant."""
    return isinstance(value, (fx.Node, torch.Tensor))


def with_marks(value: Any, mark: Any) -> list[tuple[Any, Any]]:
    """(argument value, relevance mark) pairs, list arguments flattened."""
    if isinstance(value, (list, tuple)) and isinstance(mark, list):
        return list(zip(value, mark, strict=True))
    return [(value, mark)]
