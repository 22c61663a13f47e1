"""A traced model: the fx graph of ATen ops plus what each placeholder and output is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx

from .guards import GuardCheck
from .node_args import without_cached_args

INPUT, PARAMETER, BUFFER, CONSTANT = "input", "parameter", "buffer", "constant"


@dataclass(eq=False)
class Graph:
    """An exported model graph with its placeholders told apart.

    `kinds` says for every placeholder whether it is a user input, a parameter, a buffer or a
    lifted constant; parameters and buffers are looked up on the model by name at run time, so a
    cached graph always sees the model's current weights. Shapes may be symbolic (`shapes.py`).
    """

    module: fx.GraphModule
    kinds: dict[fx.Node, str]
    input_names: dict[fx.Node, str]
    state_names: dict[fx.Node, str]
    constants: dict[fx.Node, torch.Tensor]
    in_spec: pytree.TreeSpec
    out_spec: pytree.TreeSpec
    output_names: list[str]
    check: GuardCheck  # which calls the graph serves (all of one structure, for a dynamic trace)
    static_reason: str | None = None  # why the trace has static shapes only, when dynamic tracing failed
    recorded: bool = False  # a recording of one call (`record.py`): valid for that call's values only
    decomposed: dict[str, int] = field(default_factory=dict)  # ops with no rule torch decomposed: op → nodes
    _stacks: dict[fx.Node, list[tuple[str, str]]] = field(default_factory=dict, repr=False)

    @property
    def outputs(self) -> list[Any]:
        """The graph's flat outputs (nodes, or constants), as its output node holds them now."""
        return list(pytree.tree_leaves(self.module.graph.output_node().args[0]))

    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.module.graph.nodes)

    def placeholder_values(self, model: torch.nn.Module, flat_inputs: list[Any]) -> list[Any]:
        """The values of all placeholders, in graph order, for one call."""
        values: list[Any] = []
        user = iter(flat_inputs)
        for node in self.module.graph.find_nodes(op="placeholder"):
            kind = self.kinds[node]
            if kind == INPUT:
                values.append(next(user))
            elif kind == PARAMETER:
                values.append(model.get_parameter(self.state_names[node]))
            elif kind == BUFFER:
                values.append(model.get_buffer(self.state_names[node]))
            else:
                values.append(self.constants[node])
        return values

    def module_stack(self, node: fx.Node) -> list[tuple[str, str]]:
        """(path, type name) of every module the node was called in, outermost first."""
        if node not in self._stacks:
            stack = node.meta.get("nn_module_stack") or {}
            self._stacks[node] = [(path, _type_name(t)) for path, t in stack.values()]
        return self._stacks[node]

    def module_path(self, node: fx.Node) -> str:
        """Dotted path of the innermost module that computed the node ('' for the model itself)."""
        stack = self.module_stack(node)
        return stack[-1][0] if stack else ""

    def module_type(self, node: fx.Node) -> str:
        """Qualified class name of the innermost module that computed the node."""
        stack = self.module_stack(node)
        return stack[-1][1] if stack else ""

    def module_output(self, path: str) -> fx.Node | None:
        """The node holding a module's output: its last floating-point node whose value is used outside the module."""
        inside = [
            n
            for n in self.module.graph.nodes
            if n.op == "call_function" and any(p == path for p, _ in self.module_stack(n))
        ]
        leaving = [
            n
            for n in inside
            if isinstance(n.meta.get("val"), torch.Tensor)
            and n.meta["val"].is_floating_point()
            and any(u.op == "output" or not any(p == path for p, _ in self.module_stack(u)) for u in n.users)
        ]
        return leaving[-1] if leaving else None

    def module_input(self, path: str) -> fx.Node | None:
        """The value a module is called on: the first floating-point value from outside it (not a parameter, buffer
        or constant) that a node inside reads — its first tensor argument, as a rule."""
        for node in self.module.graph.nodes:
            if node.op != "call_function" or not any(p == path for p, _ in self.module_stack(node)):
                continue
            for arg in node.all_input_nodes:
                value = arg.meta.get("val")
                outside = not any(p == path for p, _ in self.module_stack(arg)) or arg.op == "placeholder"
                if (
                    outside
                    and self.kinds.get(arg, INPUT) == INPUT
                    and isinstance(value, torch.Tensor)
                    and value.is_floating_point()
                ):
                    return arg
        return None

    def copy(self) -> Graph:
        """An independent copy (its own nodes and GraphModule), to be rewritten without touching this one."""
        graph, mapping = fx.Graph(), {}
        graph.output(graph.graph_copy(self.module.graph, mapping))
        for node in graph.nodes:
            node.meta = without_cached_args(node.meta)

        def mapped(table: dict) -> dict:
            return {mapping[n]: v for n, v in table.items()}

        return Graph(
            module=fx.GraphModule(self.module, graph),
            kinds=mapped(self.kinds),
            input_names=mapped(self.input_names),
            state_names=mapped(self.state_names),
            constants=mapped(self.constants),
            in_spec=self.in_spec,
            out_spec=self.out_spec,
            output_names=list(self.output_names),
            check=self.check,
            static_reason=self.static_reason,
            recorded=self.recorded,
            decomposed=dict(self.decomposed),
        )

    def describe(self, node: fx.Node) -> str:
        """One line naming a node, its op and its module for error messages."""
        path = self.module_path(node) or "<model>"
        return f"node '{node.name}' ({op_name(node)}) in module '{path}' ({self.module_type(node) or '?'})"


def leading(value: Any) -> Any:
    """A node's value, or a multi-output op's first result (the one its other results accompany)."""
    return value[0] if isinstance(value, (tuple, list)) and value else value


def is_float(value: Any) -> bool:
    """A floating-point (or complex) tensor, or a non-empty tuple of them (the value of a multi-output op)."""
    if isinstance(value, (tuple, list)):
        return bool(value) and all(is_float(v) for v in value)
    return isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())


def float_node(value: Any) -> bool:
    """A graph node whose value is floating point (see `is_float`)."""
    return isinstance(value, fx.Node) and is_float(value.meta.get("val"))


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return f"{t.__module__}.{t.__qualname__}"
    return str(t)


def op_name(node: fx.Node) -> str:
    """The op a node calls, as users see it in errors and reports (e.g. 'aten.linear.default')."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def output_names(out_spec: pytree.TreeSpec) -> list[str]:
    """Readable names of the flat outputs: ModelOutput keys, tuple indices, nested with dots."""
    count = out_spec.num_leaves
    structure = pytree.tree_unflatten(list(range(count)), out_spec)
    names = [""] * count
    for path, index in pytree.tree_flatten_with_path(structure)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names[index] = ".".join(parts) if parts else "output"
    return names
