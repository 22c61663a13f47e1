"""Coverage reports: does lrpgraph explain this model, and which ops would stop it?

`coverage(model, inputs)` traces the model, decides every node's rule exactly as `explain` would,
and reports what it found; `lrpgraph coverage` does it over a model zoo (the built-in one, or a
file of HuggingFace ids or local folders, configs only) and also runs `explain` end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..api.explain import explain, output_index
from ..api.traced import traced
from ..capture.call import prepare_call
from ..capture.graph import op_name
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
        "| architecture | family | nodes | relevant | covered | trace s | explain s | explain ok | missing ops |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ok = "yes" if r.explained else ("no: " + r.error if r.error else "no")
        share = f"{100 * r.covered:.2f}%" if r.nodes else "—"  # not traced: nothing to cover
        lines.append(
            f"| {r.name} | {r.family} | {r.nodes} | {r.relevant} | {share} | {r.trace_seconds:.2f} | "
            f"{r.explain_seconds:.2f} | {ok} | {', '.join(r.missing) or '—'} |"
        )
    relevant = sum(r.relevant for r in rows)
    covered = sum(r.covered * r.relevant for r in rows)
    explained = sum(r.explained for r in rows)
    share = f"{100 * covered / relevant:.2f}%" if relevant else "—"
    lines.append(
        f"| **total** ({len(rows)}) | | {sum(r.nodes for r in rows)} | {relevant} | {share} | "
        f"{sum(r.trace_seconds for r in rows):.1f} | {sum(r.explain_seconds for r in rows):.1f} | "
        f"{explained}/{len(rows)} | |"
    )
    return "\n".join(lines)


def add_command(sub: Any) -> None:
    parser = sub.add_parser("coverage", help="coverage of a model zoo: nodes with a rule, and end-to-end explain")
    parser.add_argument(
        "--zoo",
        type=Path,
        help="file of HuggingFace model ids or local folders, one per line (configs only; offline unless "
        "HF_HUB_OFFLINE=0)",
    )
    parser.add_argument("--only", nargs="+", help="names of built-in zoo architectures to run")
    parser.add_argument("--rules", default="attnlrp", help="preset (default: attnlrp)")
    parser.add_argument("--format", choices=("md", "json"), default="md")
    parser.add_argument("--output", type=Path, help="write the report here as well as to stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(run=_command)


def _command(args: argparse.Namespace) -> int:
    from .zoo import architectures, from_file

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs from local folders or the cache, as `explain` loads
    entries = from_file(args.zoo) if args.zoo else architectures(args.only)
    resolve(args.rules)
    rows = run_zoo(entries, args.rules)
    if args.format == "json":
        text = json.dumps({"rules": args.rules, "architectures": [asdict(r) for r in rows]}, indent=2)
    else:
        text = markdown(rows, args.rules)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0 if all(r.explained for r in rows) else 1
