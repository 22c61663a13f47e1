"""Plan: every node that carries relevance gets one rule, and the forward learns what to keep.

Built from the graph, the chosen output and a RuleSet: the relevance flow says which nodes and
edges carry relevance, each live node's adapter names its op class, the RuleSet picks the kernel,
and the kernel's needs say which activations the walk will read — and when for the last time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from .analysis import Analysis
from .errors import MissingRuleError, RuleSetError
from .graph import PARAMETER, Graph, op_name
from .node_args import normalized_args
from .registry import Kernel, kernel, lookup
from .rules.adapter import Adapter
from .rules.elementwise import PointwiseAdapter
from .rules.fallback import FALLBACK
from .ruleset import Choice, RuleSet
from .schedule import Schedule, make_schedule

_REDIRECT = PointwiseAdapter()
FALLBACK_MODES = ("absorb", "pass")


@dataclass
class Step:
    """One node's rule: how to call it, what it reads, where its relevance goes."""

    node: fx.Node
    op_class: str
    choice: Choice
    adapter: Adapter
    args: dict[str, Any]
    relevant: dict[str, Any]
    reads: list[fx.Node]
    needs_out: bool
    targets: list[tuple[str, int | None, fx.Node]]
    absorbs: str
    role: str | None = None
    exact: bool = False  # passes on exactly what it receives: the walker skips its bookkeeping

    @property
    def kernel(self) -> Kernel:
        return self.choice.kernel


@dataclass
class Plan:
    graph: Graph
    output: fx.Node
    order: list[fx.Node]
    steps: dict[fx.Node, Step]
    inputs: list[fx.Node]
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    sources: frozenset[fx.Node] = frozenset()  # positional encodings that receive relevance (PA-LRP)
    _schedules: dict[int | None, Schedule] = field(default_factory=dict, repr=False)

    def schedule(self, memory_budget: int | None = None) -> Schedule:
        """Which activations the forward keeps and how the rest are recomputed (cached per budget)."""
        if memory_budget not in self._schedules:
            reads = {node: step.reads for node, step in self.steps.items()}
            schedule = make_schedule(self.graph, self.order, reads, memory_budget)
            if memory_budget is not None and schedule.predicted_peak > memory_budget:
                warnings.warn(
                    f"memory_budget={memory_budget} bytes is below what the smallest schedule holds at once "
                    f"(about {schedule.predicted_peak} bytes: checkpoints plus one segment); using that one",
                    stacklevel=3,
                )
            self._schedules[memory_budget] = schedule
        return self._schedules[memory_budget]

    def rule_counts(self) -> dict[str, int]:
        """How many nodes use each (op class, rule), for reports."""
        counts: dict[str, int] = {}
        for step in self.steps.values():
            key = f"{step.op_class}:{step.choice.name}"
            counts[key] = counts.get(key, 0) + 1
        return counts


def cached_plan(
    graph: Graph,
    analysis: Analysis,
    output: fx.Node,
    ruleset: RuleSet,
    fallback: str | None = None,
    sources: frozenset[fx.Node] = frozenset(),
) -> Plan:
    """build_plan, remembered on the graph per (output, rule set, fallback, positional sources)."""
    key = (output, ruleset.fingerprint(), fallback, sources)
    if key not in graph._plans:
        graph._plans[key] = build_plan(graph, analysis, output, ruleset, fallback, sources)
    return graph._plans[key]


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
    if fallback is not None and fallback not in FALLBACK_MODES:
        raise ValueError(f"fallback must be one of {FALLBACK_MODES} or None, not {fallback!r}")
    flow = analysis.flow(output, sources)
    classes: dict[fx.Node, tuple[str, Adapter, dict, dict]] = {}
    missing: list[fx.Node] = []
    for node in reversed(flow.live):
        if node.op != "call_function" or node in sources:
            continue
        args = normalized_args(node)
        edges = set(flow.edges.get(node, ()))
        relevant = {name: _mark(value, edges) for name, value in args.items()}
        if node in analysis.redirects:
            classes[node] = ("activation", _REDIRECT, {"self": analysis.redirects[node]}, {"self": True})
            continue
        adapter = lookup(node.target)
        if adapter is None:
            if fallback is None:
                missing.append(node)
                continue
            classes[node] = ("fallback", FALLBACK, args, relevant)
            continue
        op_class = adapter.op_class(args, relevant, analysis.roles.get(node))
        classes[node] = (op_class, adapter, args, relevant)
    if missing:
        raise MissingRuleError(_missing_message(graph, missing))

    first = _first_layer(flow.live, classes, ruleset)
    steps: dict[fx.Node, Step] = {}
    for node, (op_class, adapter, args, relevant) in classes.items():
        if op_class == "fallback":
            choice = Choice(kernel("fallback", fallback), {})
        else:
            try:
                choice = ruleset.choose(op_class, op_name(node), graph.module_stack(node), node is first)
            except RuleSetError as error:
                if not ruleset.strict:
                    raise
                raise MissingRuleError(f"{error}: {graph.describe(node)}") from None
        names, needs_out = adapter.needs(op_class, choice.kernel, args, relevant)
        reads = [n for name in sorted(names) for n in _nodes(args.get(name))]
        if needs_out:
            reads.append(node)
        steps[node] = Step(
            node=node,
            op_class=op_class,
            choice=choice,
            adapter=adapter,
            args=args,
            relevant=relevant,
            reads=reads,
            needs_out=needs_out,
            targets=_targets(args, relevant),
            absorbs=_absorbs(graph, op_class, args, relevant),
            role=analysis.roles.get(node),
            exact=_exact(op_class, adapter, args, relevant),
        )
    order = flow.live
    fallbacks = [
        {"node": n.name, "op": op_name(n), "module": graph.module_path(n), "fallback": fallback or ""}
        for n, s in steps.items()
        if s.op_class == "fallback"
    ]
    inputs = [n for n in order if n.op == "placeholder"]
    return Plan(graph, output, order, steps, inputs, fallbacks, frozenset(n for n in order if n in sources))


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


def _targets(args: dict[str, Any], relevant: dict[str, Any]) -> list[tuple[str, int | None, fx.Node]]:
    targets = []
    for name, value in args.items():
        mark = relevant.get(name)
        if isinstance(value, fx.Node) and mark is True:
            targets.append((name, None, value))
        elif isinstance(value, (list, tuple)) and isinstance(mark, list):
            targets += [(name, i, v) for i, (v, m) in enumerate(zip(value, mark, strict=True)) if m]
    return targets


def _absorbs(graph: Graph, op_class: str, args: dict[str, Any], relevant: dict[str, Any]) -> str:
    """Where relevance a rule does not pass on goes: a bias or parameter, a constant operand, or the rule.

    Layers book what they keep under "bias" when they have one (their stabiliser's tiny share
    included); other ops with a constant float operand (a parameter or a computed constant such as a
    position table or a class token) under "bias" or "constants"; everything else under "rules".
    """
    if op_class == "fallback":
        return "fallback"
    if op_class in ("linear", "conv", "norm", "batchnorm"):
        bias = args.get("bias", args.get("self") if op_class == "linear" else None)
        has_bias = isinstance(bias, fx.Node) and relevant.get("bias", relevant.get("self")) is False
        return "bias" if has_bias else "rules"
    if op_class in ("attention", "softmax", "scale", "product", "gate", "quotient", "matmul", "attention_values"):
        return "rules"
    constants = [
        v
        for name, value in args.items()
        for v, mark in _with_marks(value, relevant.get(name))
        if mark is False and _is_float_node(v)
    ]
    if constants:
        return "bias" if any(graph.kinds.get(v) == PARAMETER for v in constants) else "constants"
    if op_class == "add" and not all(isinstance(args.get(k), fx.Node) for k in ("self", "other")):
        return "constants"  # a Python scalar term
    return "rules"


def _exact(op_class: str, adapter: Adapter, args: dict[str, Any], relevant: dict[str, Any]) -> bool:
    """Rules that hand on exactly the relevance they get: nonlinearities, scalings, pure re-indexing."""
    if op_class in ("activation", "scale"):
        return True
    if op_class != "reindex" or not getattr(adapter, "conserves", True):
        return False
    return all(
        mark is not False
        for name, value in args.items()
        for v, mark in _with_marks(value, relevant.get(name))
        if _is_float_node(v)
    )


def _with_marks(value: Any, mark: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, (list, tuple)) and isinstance(mark, list):
        return list(zip(value, mark, strict=True))
    return [(value, mark)]


def _is_float_node(value: Any) -> bool:
    return (
        isinstance(value, fx.Node)
        and isinstance(value.meta.get("val"), torch.Tensor)
        and value.meta["val"].is_floating_point()
    )


def _first_layer(live: list[fx.Node], classes: dict, ruleset: RuleSet) -> fx.Node | None:
    """The first node (in execution order) of an op class the rule set has a first-layer rule for."""
    wanted = set(ruleset.first)
    if not wanted:
        return None
    for node in reversed(live):
        entry = classes.get(node)
        if entry is not None and entry[0] in wanted:
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
        "  what to do: register a rule for the op (lrpgraph.registry), or pass fallback='absorb' or "
        "fallback='pass' to explain() to continue with an explicit, reported fallback"
    )
    return "\n".join(lines)
