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
from ..api.verify import verify
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
    analysis = model_trace.analysis  # its passes rewrite the graph (a cast that changes nothing goes): outputs after
    out_node = graph.outputs[output_index(graph, output)]
    plan = build_plan(graph, analysis, out_node, ruleset, fallback="absorb")
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
    shares: dict[str, float] = field(default_factory=dict)  # where the seed went, as shares of |seed|
    kept_by: dict[str, float] = field(default_factory=dict)  # what rules kept, by "op class:rule", shares of |seed|
    kept_at: list[dict[str, Any]] = field(default_factory=list)  # the nodes that kept or created the most
    verified: float | None = None  # verify's max_error (float64 where the model runs in it), None: not verified
    verified_in: str = ""  # the dtype verify ran in
    unverified: str = ""  # why verify did not pass: the first rule it could not replay, or where they differ
    scan_inputs: float | None = None  # a state-space model under rules that split its scans' selection: the inputs'
    # share under mamba-lrp, which holds the selection constant

    @property
    def audit(self) -> str:
        """Where the explained logit went when its inputs got less than 50%, more than 150% or a negative share:
        the nodes whose rules kept (positive) or created (negative) the most of it."""
        inputs = self.shares.get("inputs")
        if inputs is None or 0.5 <= inputs <= 1.5:
            return ""
        evidence = ", ".join(
            f"{100 * n['share']:+.1f}% kept at {n['node']} ({n['rule']}, {n['module']})" for n in self.kept_at[:3]
        )
        kinds = ", ".join(f"{k} {100 * v:+.1f}%" for k, v in sorted(self.shares.items()) if k != "inputs" and v)
        return f"inputs {100 * inputs:+.1f}% ({kinds or 'nothing else'}); {evidence or 'no rule kept any'}"


def seed_shares(ex: Any) -> dict[str, float]:
    """Where the seed went, as shares of |seed|: all inputs together, positions, and each absorbing kind."""
    seed = abs(float(ex.conservation.seed.sum())) or 1.0
    parts = ex.conservation.where_it_went()
    shares = {"inputs": sum(parts.pop(name) for name in ex.relevance if name in parts) / seed}
    shares.update({k: v / seed for k, v in parts.items()})
    return shares


def run_zoo(entries: list[Any], rules: str, progress: bool = True) -> list[ZooRow]:
    """Coverage, an end-to-end explain and `verify` for each zoo entry (objects with name, family and build())."""
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
                row.shares = seed_shares(ex)
                seed = abs(float(ex.conservation.seed.sum())) or 1.0
                row.kept_by = {k: v / seed for k, v in ex.stats["absorbed_by_rule"].items()}
                row.kept_at = [{**n, "share": n["absorbed"] / seed} for n in ex.stats["absorbed_by_node"]]
                if not row.explained:
                    row.error = "non-finite relevance"
                if ex.stats.get("selection") == "relevant":
                    row.scan_inputs = seed_shares(explain(model, inputs, rules="mamba-lrp"))["inputs"]
                _verify(entry, model, inputs, rules, row)
        except Exception as error:  # a zoo report records failures, it does not stop
            row.error = f"{type(error).__name__}: {first_line(error)[:200]}"
        rows.append(row)
    if progress:
        print(file=sys.stderr)
    return rows


def in_float64(entry: Any) -> tuple[torch.nn.Module, Any]:
    """`entry.build()` (a zoo entry) with float64 defaults, so the constants its code makes are float64 too, and
    the model in float64: the twin `verify` checks without float32 rounding. Raises what the build raises."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, inputs = entry.build()
    finally:
        torch.set_default_dtype(saved)
    return model.double(), inputs


def _verify(entry: Any, model: torch.nn.Module, inputs: Any, rules: str, row: ZooRow) -> None:
    """verify, in float64 (a twin built with float64 defaults) where the model runs in it, else as built."""
    try:
        twin, twin_inputs = in_float64(entry)
        check, row.verified_in = verify(twin, twin_inputs, rules=rules), "float64"
    except Exception:  # a model whose code fixes float32 somewhere: verify it as built
        check, row.verified_in = verify(model, inputs, rules=rules), str(next(model.parameters()).dtype)[6:]
    row.verified = check.max_error
    if check.unverified:
        row.unverified = check.unverified[0]
    elif not check.ok:
        w = check.worst or {}
        row.unverified = f"differs from {w.get('rule')} at {w.get('node')} ({w.get('module')})"


def markdown(rows: list[ZooRow], rules: str, tolerance: float = 1e-4) -> str:
    import transformers

    lines = [
        f"Coverage with rules `{rules}` (torch {torch.__version__}, transformers {transformers.__version__}); "
        "'relevant' counts the nodes that carry relevance, the others compute constants. 'verified' is "
        "`lrpgraph.verify`'s largest difference between the walk and its replay under autograd (every node "
        "compared, float64 unless marked), or why it could not check.",
        "",
        "| architecture | family | nodes | relevant | covered | trace s | explain s | explain ok | verified "
        "| to inputs | rules | missing ops |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for r in rows:
        ok = "yes" if r.explained else ("no: " + r.error if r.error else "no")
        share = f"{100 * r.covered:.2f}%" if r.nodes else "—"  # not traced: nothing to cover
        lines.append(
            f"| {r.name} | {r.family} | {r.nodes} | {r.relevant} | {share} | {r.trace_seconds:.2f} | "
            f"{r.explain_seconds:.2f} | {ok} | {_verified(r, tolerance)} | {_percent(r.shares, 'inputs')} | "
            f"{_percent(r.shares, 'rules')} | {', '.join(r.missing) or '—'} |"
        )
    relevant = sum(r.relevant for r in rows)
    covered = sum(r.covered * r.relevant for r in rows)
    explained = sum(r.explained for r in rows)
    verified = sum(_passed(r, tolerance) for r in rows)
    share = f"{100 * covered / relevant:.2f}%" if relevant else "—"
    lines.append(
        f"| **total** ({len(rows)}) | | {sum(r.nodes for r in rows)} | {relevant} | {share} | "
        f"{sum(r.trace_seconds for r in rows):.1f} | {sum(r.explain_seconds for r in rows):.1f} | "
        f"{explained}/{len(rows)} | {verified}/{len(rows)} | | | |"
    )
    unverified = [
        f"- {r.name}: {r.unverified or 'not run: ' + (r.error or 'not explained')}"
        for r in rows
        if not _passed(r, tolerance)
    ]
    flagged = [f"- {r.name}: {r.audit}" for r in rows if r.audit]
    scans = [
        f"- {r.name}: inputs {_percent(r.shares, 'inputs')} here, {100 * r.scan_inputs:.1f}% with `mamba-lrp`"
        for r in rows
        if r.scan_inputs is not None
    ]
    lines += [
        "",
        f"**{verified} of {len(rows)} architectures verified to {tolerance:g}**: the walk and the replay agree at "
        "every node. Not verified, and why:",
        "",
        *(unverified or ["- none"]),
        "",
        "'to inputs' and 'rules' are shares of the explained logit; the rest went to biases, constants (masks,",
        "position tables) and positions. Where the inputs got less than 50% of the logit, more than 150% or a",
        "negative share — the shares of the rest, and the three nodes whose rules kept (+) or created (−) the most:",
        "",
        *(flagged or ["- none"]),
        "",
        f"State-space models: `{rules}` splits each product of a scan between the data and the selection (Δ, Ā, B̄,",
        'C), so part of the logit takes the selection\'s path; `rules="mamba-lrp"` (MambaLRP) holds the selection',
        "constant and every scan is linear in its input. The inputs' share under both:",
        "",
        *(scans or ["- none"]),
    ]
    return "\n".join(lines)


def _passed(r: ZooRow, tolerance: float) -> bool:
    return r.verified is not None and not r.unverified and r.verified <= tolerance


def _verified(r: ZooRow, tolerance: float) -> str:
    if r.verified is None:
        return "—"
    dtype = "" if r.verified_in == "float64" else f" ({r.verified_in})"
    return f"{r.verified:.0e}{dtype}" if _passed(r, tolerance) else f"no{dtype}"


def _percent(shares: dict[str, float], key: str) -> str:
    return f"{100 * shares[key]:.1f}%" if key in shares else ("0.0%" if shares else "—")
