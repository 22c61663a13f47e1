"""Coverage reports: does lrpgraph explain this model, and which ops would stop it?

`coverage(model, inputs)` traces the model, decides every node's rule exactly as `explain` would,
and reports what it found; `run_zoo` does it over a model zoo and also runs `explain` end to end, and
`markdown` makes the table `lrpgraph coverage` prints (the command itself: `cli.py`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..api.explain import explain
from ..capture.call import prepare_call
from ..capture.graph import op_name
from ..engine.output import output_index
from ..engine.traced import traced
from ..errors import first_line
from ..presets.ruleset import RuleSet, resolve
from ..propagate.plan import build_plan


@dataclass
class MissingOp:
    op: str
    count: int
    modules: list[str]
    example: str


@dataclass
class CoverageReport:
    """What a model's traced graph needs: `covered` is the share of relevance-carrying nodes with a rule."""

    nodes: int
    relevant_nodes: int
    constant_nodes: int
    by_op: dict[str, int]
    by_rule: dict[str, int]
    missing: list[MissingOp] = field(default_factory=list)
    trace_seconds: float = 0.0

    @property
    def covered(self) -> float:
        uncovered = sum(m.count for m in self.missing)
        return 1.0 if self.relevant_nodes == 0 else (self.relevant_nodes - uncovered) / self.relevant_nodes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["covered"] = self.covered
        return data


def coverage(
    model: torch.nn.Module, inputs: Any, rules: str | RuleSet = "attnlrp", output: str | int | None = None
) -> CoverageReport:
    """Trace `model` on `inputs` and report, per op and rule, which nodes carrying relevance have a rule."""
    started = time.perf_counter()
    ruleset = resolve(rules)
    model_trace = traced(model, *prepare_call(model, inputs)).for_rules(ruleset)
    trace_seconds = time.perf_counter() - started
    graph = model_trace.graph
    out_node = graph.outputs[output_index(graph, output)]
    plan = build_plan(graph, model_trace.analysis, out_node, ruleset, fallback="absorb")
    calls = [n for n in graph.nodes if n.op == "call_function"]
    by_op = Counter(op_name(n) for n in plan.steps)
    missing: dict[str, MissingOp] = {}
    for node, step in plan.steps.items():
        if not step.is_fallback:
            continue
        entry = missing.setdefault(op_name(node), MissingOp(op_name(node), 0, [], graph.describe(node)))
        entry.count += 1
        path = graph.module_path(node) or "<model>"
        if path not in entry.modules:
            entry.modules.append(path)
    return CoverageReport(
        nodes=len(calls),
        relevant_nodes=len(plan.steps),
        constant_nodes=len(calls) - len(plan.steps),
        by_op=dict(by_op.most_common()),
        by_rule={k: v for k, v in sorted(plan.rule_counts().items()) if not k.startswith("fallback:")},
        missing=sorted(missing.values(), key=lambda m: -m.count),
        trace_seconds=trace_seconds,
    )


# why a rule keeps (or gives) relevance by design — the conservation audit's explanations, by "op class:rule"
WHY = {
    "attention:uniform": "AttnLRP's softmax rule x ⊙ (R − p·ΣR) (inside attention) keeps the softmax's implicit "
    "bias term, by the paper's design; large where attention logits are large, as with random weights",
    "softmax:taylor": "AttnLRP's softmax rule x ⊙ (R − p·ΣR) keeps the softmax's implicit bias term, by design",
    "add:norm": "the stabiliser of a sum whose terms nearly cancel: each term gets t/(Σ + ε·sign Σ)·R, which "
    "conserves only while |Σ| ≫ ε (recurrences such as RWKV's WKV and GRU's (1−z)·n + z·h add opposite signs)",
    "avgpool:norm": "the stabiliser of an average pool whose mean is near zero (squeeze-excitation pools): "
    "x/(mean + ε·sign)·R/N conserves only while |mean| ≫ ε",
    "negative": "a bias or constant (a position table) whose contribution has the opposite sign gets negative "
    "relevance, so the inputs get more than the logit; the parts still sum to it",
}


@dataclass
class ZooRow:
    name: str
    family: str
    nodes: int = 0
    relevant: int = 0
    covered: float = 0.0
    trace_seconds: float = 0.0
    explain_seconds: float = 0.0
    explained: bool = False
    missing: list[str] = field(default_factory=list)
    error: str = ""
    shares: dict[str, float] = field(default_factory=dict)  # where the seed went, as shares of |seed|
    kept_by: dict[str, float] = field(default_factory=dict)  # what rules kept, by "op class:rule", shares of |seed|

    @property
    def audit(self) -> str:
        """Why conservation needs a look: rules absorbing or creating over 5% of the seed, inputs over 105%."""
        notes = []
        if abs(self.shares.get("rules", 0.0)) > 0.05:
            rules = {k.split(" at ", 1)[1]: v for k, v in self.kept_by.items() if k.startswith("rules at ")}
            top = max(rules.items(), key=lambda kv: abs(kv[1]), default=("?", 0.0))[0]
            reason = WHY.get(top, "not yet explained")
            notes.append(f"rules {100 * self.shares['rules']:+.0f}%, most at {top} — {reason}")
        if self.shares.get("inputs", 0.0) > 1.05:
            negative = {k: v for k, v in self.kept_by.items() if v < 0}
            top = min(negative.items(), key=lambda kv: kv[1], default=("?", 0.0))
            notes.append(
                f"inputs {100 * self.shares['inputs']:.0f}%, as {top[0]} holds {100 * top[1]:+.0f}% — {WHY['negative']}"
            )
        return "; ".join(notes)


def _shares(ex: Any) -> dict[str, float]:
    """Where the seed went, as shares of |seed|: all inputs together, positions, and each absorbing kind."""
    seed = abs(float(ex.conservation.seed.sum())) or 1.0
    parts = ex.conservation.where_it_went()
    shares = {"inputs": sum(parts.pop(name) for name in ex.relevance if name in parts) / seed}
    shares.update({k: v / seed for k, v in parts.items()})
    return shares


def run_zoo(entries: list[Any], rules: str, progress: bool = True) -> list[ZooRow]:
    """Coverage and an end-to-end explain for each zoo entry (objects with name, family and build())."""
    rows = []
    for i, entry in enumerate(entries):
        if progress:
            print(f"\r[{i + 1}/{len(entries)}] {entry.name:<28}", end="", file=sys.stderr, flush=True)
        row = ZooRow(entry.name, entry.family)
        try:
            model, inputs = entry.build()
            report = coverage(model, inputs, rules)
            row.nodes, row.relevant, row.covered = report.nodes, report.relevant_nodes, report.covered
            row.trace_seconds = report.trace_seconds
            row.missing = [f"{m.op}×{m.count}" for m in report.missing]
            if not report.missing:
                started = time.perf_counter()
                ex = explain(model, inputs, rules=rules)
                row.explain_seconds = time.perf_counter() - started
                row.explained = all(bool(torch.isfinite(r).all()) for r in ex.relevance.values())
                row.shares = _shares(ex)
                seed = abs(float(ex.conservation.seed.sum())) or 1.0
                row.kept_by = {k: v / seed for k, v in ex.stats["absorbed_by_rule"].items()}
                if not row.explained:
                    row.error = "non-finite relevance"
        except Exception as error:  # a zoo report records failures, it does not stop
            row.error = f"{type(error).__name__}: {first_line(error)[:200]}"
        rows.append(row)
    if progress:
        print(file=sys.stderr)
    return rows


def markdown(rows: list[ZooRow], rules: str) -> str:
    import transformers

    lines = [
        f"Coverage with rules `{rules}` (torch {torch.__version__}, transformers {transformers.__version__}); "
        "'relevant' counts the nodes that carry relevance, the others compute constants.",
        "",
        "| architecture | family | nodes | relevant | covered | trace s | explain s | explain ok | to inputs | rules "
        "| missing ops |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        ok = "yes" if r.explained else ("no: " + r.error if r.error else "no")
        share = f"{100 * r.covered:.2f}%" if r.nodes else "—"  # not traced: nothing to cover
        lines.append(
            f"| {r.name} | {r.family} | {r.nodes} | {r.relevant} | {share} | {r.trace_seconds:.2f} | "
            f"{r.explain_seconds:.2f} | {ok} | {_percent(r.shares, 'inputs')} | {_percent(r.shares, 'rules')} | "
            f"{', '.join(r.missing) or '—'} |"
        )
    relevant = sum(r.relevant for r in rows)
    covered = sum(r.covered * r.relevant for r in rows)
    explained = sum(r.explained for r in rows)
    share = f"{100 * covered / relevant:.2f}%" if relevant else "—"
    lines.append(
        f"| **total** ({len(rows)}) | | {sum(r.nodes for r in rows)} | {relevant} | {share} | "
        f"{sum(r.trace_seconds for r in rows):.1f} | {sum(r.explain_seconds for r in rows):.1f} | "
        f"{explained}/{len(rows)} | | | |"
    )
    flagged = [f"- {r.name}: {r.audit}" for r in rows if r.audit]
    lines += [
        "",
        "'to inputs' and 'rules' are shares of the explained logit; the rest went to biases, constants (masks,",
        "position tables) and positions. Conservation audit — rules absorbing or creating more than 5%, or inputs",
        "receiving more than 105%:",
        "",
        *(flagged or ["- none"]),
    ]
    return "\n".join(lines)


def _percent(shares: dict[str, float], key: str) -> str:
    return f"{100 * shares[key]:.1f}%" if key in shares else ("0.0%" if shares else "—")
