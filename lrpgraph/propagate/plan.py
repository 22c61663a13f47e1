"""Plan: every node that carries relevance gets one rule, and the forward learns what to keep.

Built from the graph, the chosen output and a RuleSet: the relevance flow says which nodes and
edges carry relevance, each live node's adapter names its op class, the RuleSet picks the kernel,
and the kernel's needs say which activations the walk will read — and when for the last time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from torch import fx

from ..caller import warn
from ..capture.graph import PARAMETER, Graph, float_node, op_name
from ..capture.node_args import normalised_args
from ..capture.shapes import Shapes
from ..errors import MissingRuleError, RuleSetError
from ..flow.analysis import Analysis
from ..flow.relevance import is_index
from ..ops.adapter import Adapter, Role, with_marks
from ..ops.elementwise import REDIRECT
from ..ops.fallback import FALLBACK, MODES
from ..ops.registry import Kernel, OpClass, kernel
from ..ops.table import lookup
from ..presets.ruleset import Choice, RuleSet
from .schedule import Schedule, Size, byte_sizes, make_schedule

CONSTANT, FETCH, STAND_IN = 0, 1, 2  # how the walker resolves a step's argument (`Step.arguments`)


@dataclass
class Step:
    """One node's rule: how to call it, what it reads, which nodes receive its relevance."""

    node: fx.Node
    op_class: OpClass
    choice: Choice
    adapter: Adapter
    args: dict[str, Any]
    relevant: dict[str, Any]
    reads: list[fx.Node]
    needs_out: bool
    receivers: list[tuple[str, int | None, fx.Node]]  # (argument, index in a list argument, node)
    absorbs: str
    role: Role | None = None
    role_reads: tuple[fx.Node, ...] = ()  # values read through the role beyond the op's arguments (in `reads` too)
    exact: bool = False  # passes on exactly what it receives: the walker skips its bookkeeping

    @property
    def kernel(self) -> Kernel:
        return self.choice.kernel

    @functools.cached_property
    def arguments(self) -> tuple[tuple[str, Any, int], ...]:
        """(name, value, how) per argument, as the walker resolves it at every call: how is FETCH for a node the
        rule reads (or an input or parameter), STAND_IN for another node (its shape only), CONSTANT for anything
        else, and for a list argument the list of (value, how) of its items."""
        reads = set(self.reads)

        def how(value: Any) -> Any:
            if isinstance(value, fx.Node):
                return FETCH if value in reads or value.op == "placeholder" else STAND_IN
            if isinstance(value, (list, tuple)):
                return [(v, how(v)) for v in value]
            return CONSTANT

        return tuple((name, value, how(value)) for name, value in self.args.items())

    @property
    def is_fallback(self) -> bool:
        return self.adapter is FALLBACK


@dataclass
class Plan:
    graph: Graph
    output: fx.Node
    order: list[fx.Node]
    steps: dict[fx.Node, Step]
    inputs: list[fx.Node]
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    sources: frozenset[fx.Node] = frozenset()  # positional encodings that receive relevance (PA-LRP)
    _schedules: dict[tuple, Schedule] = field(default_factory=dict, repr=False)
    _counts: dict[str, int] | None = field(default=None, repr=False)

    def schedule(self, shapes: Shapes, memory_budget: int | None = None, output_rows: int | None = None) -> Schedule:
        """Which activations the forward keeps and how the rest are recomputed.

        Without a budget the choice does not depend on sizes (one schedule serves every call); with
        one it does, and is cached per budget and concrete shapes. output_rows: the output is held at
        that many rows of its last dim only (a deferred head, `head.py`).
        """
        key = (None,) if memory_budget is None else (memory_budget, shapes.values, output_rows)
        if key not in self._schedules:
            reads = {node: step.reads for node, step in self.steps.items()}
            size = byte_sizes(shapes)
            if output_rows is not None:
                row = shapes.of(self.output)[-1] * self.output.meta["val"].element_size()
                size = _resized(size, self.output, output_rows * row)
            schedule = make_schedule(self.graph, self.order, reads, memory_budget, size)
            if memory_budget is not None and schedule.predicted_peak > memory_budget:
                warn(
                    f"memory_budget={memory_budget} bytes is below what the smallest schedule holds at once "
                    f"(about {schedule.predicted_peak} bytes: checkpoints plus one segment); using that one"
                )
            self._schedules[key] = schedule
        return self._schedules[key]

    def rule_counts(self) -> dict[str, int]:
        """How many nodes use each (op class, rule), for reports (counted once per plan: every call reports them)."""
        if self._counts is None:
            self._counts = {}
            for step in self.steps.values():
                key = f"{step.op_class}:{step.choice.name}"
                self._counts[key] = self._counts.get(key, 0) + 1
        return dict(self._counts)


def _resized(size: Size, node: fx.Node, nbytes: int) -> Size:
    """`size`, except that `node` takes `nbytes`."""
    return lambda n: nbytes if n is node else size(n)


def build_plan(
    graph: Graph,
    analysis: Analysis,
    output: fx.Node,
    ruleset: RuleSet,
    fallback: str | None = None,
    sources: frozenset[fx.Node] = frozenset(),
) -> Plan:
    """Choose every live node's rule; raise MissingRuleError for an op without one (unless `fallback`).

    `sources` (positional encodings, for PA-LRP) receive relevance like inputs: the walk ends there.
    """
    if fallback is not None and fallback not in MODES:
        raise ValueError(f"fallback must be one of {MODES} or None, not {fallback!r}")
    flow = analysis.flow(output, sources, hold_selection=ruleset.selection == "constant")
    classes: dict[fx.Node, tuple[OpClass, Adapter, dict, dict]] = {}
    missing: list[fx.Node] = []
    for node in reversed(flow.live):
        if node.op != "call_function" or node in sources:
            continue
        args = normalised_args(node)
        edges = set(flow.edges.get(node, ()))
        relevant = {name: _mark(value, edges) for name, value in args.items()}
        if node in analysis.redirects:
            args, relevant = {"self": analysis.redirects[node]}, {"self": True}
            classes[node] = (REDIRECT.op_class(args, relevant, None), REDIRECT, args, relevant)
            continue
        adapter = lookup(node.target, integer=is_index(node.meta.get("val")))
        if adapter is None and fallback is None:
            missing.append(node)
            continue
        adapter = adapter or FALLBACK
        classes[node] = (adapter.op_class(args, relevant, analysis.roles.get(node)), adapter, args, relevant)
    if missing:
        raise MissingRuleError(_missing_message(graph, missing))

    first = _first_layer(flow.live, classes, ruleset)
    steps = {
        node: _step(graph, analysis, ruleset, node, entry, node is first, fallback) for node, entry in classes.items()
    }
    fallbacks = [
        {"node": n.name, "op": op_name(n), "module": graph.module_path(n), "fallback": fallback or ""}
        for n, s in steps.items()
        if s.is_fallback
    ]
    inputs = [n for n in flow.live if n.op == "placeholder"]
    if not inputs and not any(n in sources for n in flow.live):
        raise MissingRuleError(
            f"relevance from output '{output.name}' reaches none of the model's inputs: no chain of ops with rules "
            "joins them (integer inputs receive relevance only through a table lookup such as an embedding)"
        )
    return Plan(graph, output, flow.live, steps, inputs, fallbacks, frozenset(n for n in flow.live if n in sources))


def _step(graph, analysis, ruleset, node, entry, first: bool, fallback: str | None) -> Step:
    op_class, adapter, args, relevant = entry
    if adapter is FALLBACK:
        choice = Choice(kernel(op_class.name, fallback), {})
    else:
        try:
            choice = ruleset.choose(op_class.name, op_name(node), graph.module_stack(node), first)
        except RuleSetError as error:
            if not ruleset.strict:
                raise
            raise MissingRuleError(f"{error}: {graph.describe(node)}") from None
    names, needs_out = adapter.needs(op_class, choice.kernel, args, relevant)
    role = analysis.roles.get(node)
    role_reads = tuple(adapter.role_reads(choice.kernel, role))
    reads = [n for name in sorted(names) for n in _nodes(args.get(name))]
    reads += [n for n in role_reads if n not in reads]
    if needs_out:
        reads.append(node)
    return Step(
        node=node,
        op_class=op_class,
        choice=choice,
        adapter=adapter,
        args=args,
        relevant=relevant,
        reads=reads,
        needs_out=needs_out,
        receivers=_receivers(args, relevant),
        absorbs=_absorbs(graph, op_class, adapter, args, relevant),
        role=role,
        role_reads=role_reads,
        exact=op_class.exact and adapter.conserves(args, relevant),
    )


def _mark(value: Any, edges: set[fx.Node]) -> Any:
    if isinstance(value, fx.Node):
        return value in edges
    if isinstance(value, (list, tuple)):
        return [isinstance(v, fx.Node) and v in edges for v in value]
    return False


def _nodes(value: Any) -> list[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, fx.Node)]
    return []


def _receivers(args: dict[str, Any], relevant: dict[str, Any]) -> list[tuple[str, int | None, fx.Node]]:
    receivers = []
    for name, value in args.items():
        mark = relevant.get(name)
        if isinstance(value, fx.Node) and mark is True:
            receivers.append((name, None, value))
        elif isinstance(value, (list, tuple)) and isinstance(mark, list):
            receivers += [(name, i, v) for i, (v, m) in enumerate(zip(value, mark, strict=True)) if m]
    return receivers


def _absorbs(graph: Graph, op_class: OpClass, adapter: Adapter, args: dict, relevant: dict) -> str:
    """Where relevance a rule does not pass on is booked: a bias or parameter, a constant operand, or the rule.

    Layers book what they keep under "bias" when they have one (their stabilizer's tiny share
    included); other ops with a constant float operand (a parameter or a computed constant such as a
    position table or a class token) under "bias" or "constants"; everything else under "rules".
    """
    if op_class.absorbs in ("rules", "fallback"):
        return op_class.absorbs
    if op_class.absorbs == "bias":
        bias = args.get(adapter.bias) if adapter.bias else None
        return "bias" if isinstance(bias, fx.Node) and relevant.get(adapter.bias) is False else "rules"
    constants = [
        v
        for name, value in args.items()
        for v, mark in with_marks(value, relevant.get(name))
        if mark is False and float_node(v)
    ]
    if constants:
        return "bias" if any(graph.kinds.get(v) == PARAMETER for v in constants) else "constants"
    return "constants" if adapter.constant_terms(args) else "rules"


def _first_layer(live: list[fx.Node], classes: dict, ruleset: RuleSet) -> fx.Node | None:
    """The first node (in execution order) of an op class the rule set has a first-layer rule for."""
    wanted = set(ruleset.first)
    if not wanted:
        return None
    for node in reversed(live):
        entry = classes.get(node)
        if entry is not None and entry[0].name in wanted:
            return node
    return None


def _missing_message(graph: Graph, missing: list[fx.Node]) -> str:
    by_op: dict[str, list[fx.Node]] = {}
    for node in missing:
        by_op.setdefault(op_name(node), []).append(node)
    lines = [f"{len(missing)} node(s) carry relevance through ops with no LRP rule:"]
    for op, nodes in sorted(by_op.items()):
        lines.append(f"  {op} ×{len(nodes)}, e.g. {graph.describe(nodes[0])}")
    lines.append(
        "  what to do: register a rule for the op (lrpgraph.ops.registry), or pass fallback='absorb' or "
        "fallback='pass' to explain() to continue with an explicit, reported fallback"
    )
    return "\n".join(lines)
