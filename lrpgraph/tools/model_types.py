"""Coverage over every model type transformers registers: a tiny model built for each (`tiny.py`), explained,
verified in float64, timed against its gradient; run in worker processes, resumable from a JSON-lines file.

`run_types` drives it (the command: `lrpgraph coverage --transformers`), `markdown_types` writes the report.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

SLOW = 10.0  # an explain slower than this many gradients is investigated (issue: "slow is a bug")


@dataclass
class TypeRow:
    """What happened to one model type; `stage` names the step that failed ('' when all passed)."""

    model_type: str
    family: str = ""
    built: bool = False
    model_class: str = ""
    shrink: str = ""
    parameters: int = 0
    inputs: list[str] = field(default_factory=list)
    traced: str = ""  # "export" or "recorded"
    explained: bool = False
    verified: bool = False
    max_error: float | None = None
    verified_in: str = ""
    to_inputs: float | None = None  # share of the explained logit that reached the inputs
    unreached: list[str] = field(default_factory=list)
    nodes: int = 0  # nodes of the walk
    build_seconds: float = 0.0
    explain_seconds: float = 0.0  # the first call, trace included
    warm_seconds: float = 0.0  # a second call on the cached trace
    gradient_seconds: float = 0.0  # forward + input gradient of the explained logit
    stage: str = ""
    error: str = ""

    @property
    def slow(self) -> bool:
        return bool(self.gradient_seconds) and self.warm_seconds > SLOW * self.gradient_seconds

    @property
    def cause(self) -> str:
        """The failure, without what names this model: its stage and the error's first words."""
        if not self.stage:
            return ""
        text = self.error.split(": ", 1)[-1] if self.stage != "build" else self.error
        for name in (self.model_class, self.model_type):
            text = text.replace(name, "<model>") if name else text
        words = " ".join(text.replace("\n", " ").split()[:8])
        return f"{self.stage}: {words}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TypeRow:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def model_types() -> list[str]:
    """Every model type transformers registers with a model class, sorted."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return sorted(MODEL_MAPPING_NAMES)


def _family(tiny: Any) -> str:
    inputs, name = set(tiny.inputs), tiny.model_class
    if {"input_ids", "pixel_values"} <= inputs:
        return "multimodal"
    if inputs & {"pixel_values", "grid_thw", "image_grid_thw"}:
        return "vision"
    if inputs & {"input_values", "input_features"}:
        return "audio"
    if "decoder_input_ids" in inputs:
        return "encoder-decoder"
    return "decoder" if "CausalLM" in name else "encoder"


def run_one(model_type: str, rules: str, built: Callable[[TypeRow], None] | None = None) -> TypeRow:
    """Build, explain (twice: cold and warm), verify in float64 and time the gradient of one model type.

    built: called with the row once the model is built (a worker sends it on, so that a crash or a timeout later
    still reports what was built)."""
    from ..api.explain import explain
    from .coverage import seed_shares
    from .tiny import said, tiny_model

    row = TypeRow(model_type)
    started = time.perf_counter()
    try:
        tiny = tiny_model(model_type)
    except Exception as error:
        row.stage, row.error = "build", str(error)[:400]
        return row
    row.built, row.model_class, row.shrink = True, tiny.model_class, tiny.shrink.name
    row.family, row.inputs = _family(tiny), list(tiny.inputs)
    row.parameters = sum(p.numel() for p in tiny.model.parameters())
    row.build_seconds = time.perf_counter() - started
    row.stage = "explain"
    if built is not None:
        built(row)
    try:
        started = time.perf_counter()
        target, ex = _first_explain(tiny.model, tiny.inputs, rules)
        row.explain_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ex = explain(tiny.model, tiny.inputs, target, rules=rules)
        row.warm_seconds = time.perf_counter() - started
        row.traced = ex.stats["tracer"]
        row.unreached = sorted(ex.unreached)
        row.nodes = ex.stats["nodes"]
        row.to_inputs = seed_shares(ex)["inputs"]
        row.explained = all(bool(torch.isfinite(r).all()) for r in ex.relevance.values())
        row.stage = "verify"
        _verify(model_type, tiny, target, rules, row)
        row.stage = "" if row.verified else "verify"
        row.gradient_seconds = _gradient_seconds(tiny.model, tiny.inputs, ex.seed)
    except Exception as error:
        row.error = said(error, 400)
    return row


def _first_explain(model: torch.nn.Module, inputs: dict[str, Any], rules: str) -> tuple[Any, Any]:
    """(target, explanation): explain's default target (the predicted class or token), or, for an output that
    has no classes (a waveform, a loss per sample), each sample's largest element."""
    from ..api.explain import explain
    from ..errors import TargetError

    try:
        return None, explain(model, inputs, rules=rules)
    except TargetError:
        return _largest, explain(model, inputs, _largest, rules=rules)


def _largest(output: torch.Tensor) -> torch.Tensor:
    """A seed of 1 at each sample's largest output element."""
    flat = output.detach().reshape(output.shape[0], -1)
    return torch.zeros_like(flat).scatter_(1, flat.argmax(1, keepdim=True), 1.0).reshape(output.shape)


def _verify(model_type: str, tiny: Any, target: Any, rules: str, row: TypeRow) -> None:
    """verify on the same model built in float64 (the float32 one where its code fixes float32 somewhere)."""
    from ..api.verify import verify
    from .tiny import tiny_model

    saved = torch.get_default_dtype()
    try:
        twin = tiny_model(model_type, dtype=torch.float64)
        torch.set_default_dtype(torch.float64)  # as it was built: code making tensors of the default dtype (Kosmos-2's
        # causal mask filled with float64's smallest value) runs as written
        check, row.verified_in = verify(twin.model.double(), twin.inputs, target, rules=rules), "float64"
    except Exception:
        torch.set_default_dtype(saved)
        check, row.verified_in = verify(tiny.model, tiny.inputs, target, rules=rules), "float32"
    finally:
        torch.set_default_dtype(saved)
    row.max_error, row.verified = check.max_error, check.ok
    if check.unverified:
        row.error = f"unverified: {check.unverified[0]}"
    elif not check.ok and check.worst:
        w = check.worst
        row.error = f"differs by {check.max_error:.1e} after {w['rule']} at {w['op']} ({w['module']})"
    elif not check.ok:
        row.error = f"differs by {check.max_error:.1e} at " + ", ".join(
            f"{k} ({v:.1e})" for k, v in check.errors.items() if v > check.tolerance
        )


def _gradient_seconds(model: torch.nn.Module, inputs: dict[str, Any], seed: torch.Tensor) -> float:
    """Seconds for one forward and the gradient of the explained logit with respect to the input embeddings or
    the float inputs only (no parameter gradients): the fair baseline."""
    leaves: list[torch.Tensor] = []
    call = {k: v.detach().requires_grad_() if v.is_floating_point() else v for k, v in inputs.items()}
    leaves += [v for v in call.values() if v.requires_grad]

    def keep(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.detach().requires_grad_()
        leaves.append(output)
        return output

    try:
        embeddings = model.get_input_embeddings() if not leaves else None
    except (AttributeError, NotImplementedError):  # a model without token embeddings: its float inputs are leaves
        embeddings = None
    hook = embeddings.register_forward_hook(keep) if isinstance(embeddings, torch.nn.Module) else None
    try:
        started = time.perf_counter()
        out = model(**call)
        values = [v for v in (out.values() if hasattr(out, "values") else [out]) if isinstance(v, torch.Tensor)]
        logits = next(v for v in values if v.is_floating_point() and v.shape == seed.shape)
        torch.autograd.grad((logits * seed).sum(), leaves, allow_unused=True)
        return time.perf_counter() - started
    except Exception:  # no output shaped like the seed, no float leaf: no baseline, the ratio is not shown
        return 0.0
    finally:
        if hook is not None:
            hook.remove()


def _worker(connection: Any, rules: str) -> None:
    """A worker process: model types in, rows (as dicts) out, until it is sent None."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import logging

    logging.disable(logging.WARNING)
    while (model_type := connection.recv()) is not None:
        row = run_one(model_type, rules, built=lambda row: connection.send(("built", asdict(row))))
        connection.send(("done", asdict(row)))


def read_rows(path: Path) -> dict[str, TypeRow]:
    """The rows already in a JSON-lines file (the last one per model type); a torn last line is skipped."""
    rows: dict[str, TypeRow] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = TypeRow.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            rows[row.model_type] = row
    return rows


def run_types(
    types: list[str], rules: str, rows_path: Path | None = None, workers: int = 1, timeout: float = 600.0
) -> list[TypeRow]:
    """Run every model type in `workers` processes (one type at a time each; a type over `timeout` seconds is
    a failure and its worker is replaced); rows already in `rows_path` are kept, new ones appended as they end."""
    done = read_rows(rows_path) if rows_path else {}
    todo = [t for t in types if t not in done]
    context = multiprocessing.get_context("spawn")
    pool: dict[Any, tuple[Any, str | None, float]] = {}
    built: dict[Any, TypeRow] = {}  # the row a worker sent when it had built its model
    out = rows_path.open("a") if rows_path else None
    finished, total = len(types) - len(todo), len(types)

    def start() -> Any:
        mine, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, rules), daemon=True)
        process.start()
        pool[mine] = (process, None, 0.0)
        return mine

    def give(connection: Any) -> None:
        process, _, _ = pool[connection]
        if todo:
            model_type = todo.pop(0)
            connection.send(model_type)
            pool[connection] = (process, model_type, time.monotonic())
        else:
            connection.send(None)
            process.join(timeout=10)
            del pool[connection]

    def record(row: TypeRow) -> None:
        nonlocal finished
        done[row.model_type] = row
        finished += 1
        if out:
            out.write(json.dumps(asdict(row)) + "\n")
            out.flush()
        state = "verified" if row.verified else (row.stage or "?")
        print(f"\r[{finished}/{total}] {row.model_type:<36} {state:<10}", end="", file=sys.stderr, flush=True)

    try:
        for _ in range(min(workers, len(todo))):
            give(start())
        while pool:
            ready = multiprocessing.connection.wait(list(pool), timeout=5)
            for connection in ready:
                try:
                    tag, row = connection.recv()
                except EOFError:  # the worker died (a crash in native code): its type fails, a new worker goes on
                    process, model_type, _ = pool.pop(connection)
                    record(failed(built.pop(connection, None), model_type, "crash", f"exit code {process.exitcode}"))
                    if todo:
                        give(start())
                    continue
                if tag == "built":
                    built[connection] = TypeRow.from_dict(row)
                    continue
                built.pop(connection, None)
                record(TypeRow.from_dict(row))
                give(connection)
            for connection, (process, model_type, since) in list(pool.items()):
                if model_type and time.monotonic() - since > timeout:
                    process.kill()
                    process.join()
                    del pool[connection]
                    record(failed(built.pop(connection, None), model_type, "timeout", f"over {timeout:.0f} s"))
                    if todo:
                        give(start())
    finally:
        for process, _, _ in pool.values():
            process.kill()
        if out:
            out.close()
        print(file=sys.stderr)
    return [done[t] for t in types if t in done]


def failed(row: TypeRow | None, model_type: str | None, stage: str, error: str) -> TypeRow:
    """The row of a type whose worker crashed or ran out of time: what it had built (if it got that far), the
    stage that did not end and why."""
    row = row or TypeRow(model_type or "?")
    row.stage, row.error = stage, f"{row.stage or 'build'}: worker {error}" if row.built else f"worker {error}"
    return row


def markdown_types(rows: list[TypeRow], rules: str) -> str:
    """The report: totals, totals by family and by failure cause, the slow ones, then a row per model type."""
    import transformers

    built = [r for r in rows if r.built]
    verified = [r for r in built if r.verified]
    explained = [r for r in built if r.explained]
    lines = [
        f"# Coverage of every model type in transformers {transformers.__version__}",
        "",
        f"Written by `lrpgraph coverage --transformers` (rules `{rules}`, torch {torch.__version__}). Each "
        "model type gets a tiny random-weight model built from its config class's defaults, shrunk "
        "(`lrpgraph/tools/tiny.py`: 'tiny' = 2 layers of width 32; 'depth kept', 'default heads' (width 512) and "
        "'widths kept' where the tiny shrink did not build), a task head where transformers has one; it is explained "
        "and then `lrpgraph.verify`'d in float64 (float32 where the model's code fixes float32: marked), every node "
        "of the walk replayed as a modified gradient, tolerance 1e-4. "
        "'explained' means verified, not finite.",
        "",
        f"- Transformers registers {len(registered := model_types())} model types with a model class; "
        + (
            "all ran."
            if {r.model_type for r in rows} >= set(registered)
            else f"{len(rows)} ran here, the rest not yet (the command resumes from its --rows file)."
        ),
        f"- **{len(rows)} model types run; {len(built)} built ({_pct(len(built), len(rows))}); "
        f"{len(explained)} explained ({_pct(len(explained), len(built))} of built); "
        f"{len(verified)} verified ({_pct(len(verified), len(built))} of built).**",
        f"- Slower than {SLOW:g}× the fair gradient (forward + gradient at the input embeddings, warm explain): "
        f"{sum(r.slow for r in verified)} of the verified.",
        "",
        "## By family",
        "",
        "| family | built | explained | verified |",
        "|---|---:|---:|---:|",
    ]
    by_family: dict[str, list[TypeRow]] = defaultdict(list)
    for r in built:
        by_family[r.family].append(r)
    for family, members in sorted(by_family.items()):
        lines.append(
            f"| {family} | {len(members)} | {sum(r.explained for r in members)} | {sum(r.verified for r in members)} |"
        )
    causes: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.cause:
            causes[r.cause].append(r.model_type)
    lines += ["", "## Failures by cause", "", "| count | cause | model types |", "|---:|---|---|"]
    for cause, types in sorted(causes.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(types[:6]) + (" …" if len(types) > 6 else "")
        lines.append(f"| {len(types)} | {cause.replace('|', '/')} | {shown} |")
    lines += ["", f"## Slower than {SLOW:g}× the gradient", "", *_slow_lines(verified)]
    lines += ["", "## The hand-written zoo", "", *_zoo_lines(rows)]
    lines += [
        "",
        "## Every model type",
        "",
        "| model type | family | class | shrink | params | traced | explain s (cold / warm) | × gradient | to inputs "
        "| verified | error |",
        "|---|---|---|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = f"{r.warm_seconds / r.gradient_seconds:.1f}" if r.gradient_seconds else "—"
        share = f"{100 * r.to_inputs:.1f}%" if r.to_inputs is not None else "—"
        check = (
            f"{r.max_error:.0e}" + ("" if r.verified_in == "float64" else f" ({r.verified_in})") if r.verified else "no"
        )
        lines.append(
            f"| {r.model_type} | {r.family or '—'} | {r.model_class or '—'} | {r.shrink or '—'} | "
            f"{r.parameters / 1e6:.2f}M | {r.traced or '—'} | {r.explain_seconds:.1f} / {r.warm_seconds:.2f} | "
            f"{ratio} | {share} | {check if r.built else '—'} | {r.error[:160].replace('|', '/') or '—'} |"
        )
    return "\n".join(lines)


def _slow_lines(verified: list[TypeRow]) -> list[str]:
    """The verified models whose warm explain took more than SLOW gradients, with the cost per node of the walk
    against the median over all verified models: near the median, the cause is the walk's fixed cost per node
    (which a tiny model's gradient does not pay), not a slow rule or an unrolled loop."""
    timed = [r for r in verified if r.nodes and r.warm_seconds]
    if not timed:
        return ["- none timed"]
    per_node = sorted(r.warm_seconds / r.nodes for r in timed)
    median = per_node[len(per_node) // 2]
    slow = sorted((r for r in timed if r.slow), key=lambda r: -r.warm_seconds / r.gradient_seconds)
    lines = [
        f"The median warm explain costs {1e6 * median:.0f} µs per node of the walk. A tiny model's gradient takes "
        "milliseconds, so a walk of a few hundred nodes is more than ten gradients by its fixed cost per node alone "
        "(issue 27, compiling the walk, removes it). A model torch.export cannot trace is recorded again at every "
        "call, which a warm explain pays; any other whose cost per node is more than 3× the median is slow for "
        "another reason and is marked **investigate**.",
        "",
        "| model type | warm explain ms | gradient ms | × gradient | nodes | µs per node | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in slow:
        cost = r.warm_seconds / r.nodes
        if r.traced == "recorded":  # export cannot trace it: every call is recorded again before its walk
            mark = "recorded at every call"
        else:
            mark = "**investigate**" if cost > 3 * median else "fixed cost per node"
        lines.append(
            f"| {r.model_type} | {1e3 * r.warm_seconds:.1f} | {1e3 * r.gradient_seconds:.2f} | "
            f"{r.warm_seconds / r.gradient_seconds:.1f} | {r.nodes} | {1e6 * cost:.0f} | {mark} |"
        )
    return lines if slow else ["- none"]


def _zoo_lines(rows: list[TypeRow]) -> list[str]:
    """Which entries of the hand-written zoo (`zoo.toml`) the builder reaches and verifies, and which it does not:
    those the zoo is kept for."""
    import transformers

    from .zoo import ARCHITECTURES, Architecture

    by_type = {r.model_type: r for r in rows}
    reached, kept = [], []
    for entry in ARCHITECTURES:
        if not isinstance(entry, Architecture):
            continue
        model_type = getattr(transformers, entry.config).model_type
        row = by_type.get(model_type)
        if row is None:
            continue
        (reached if row.verified else kept).append(f"{entry.name} ({model_type}: {row.stage or 'verified'})")
    return [
        f"Of the zoo's HuggingFace entries whose model type ran here, {len(reached)} are built and verified by the "
        f"builder as well; the zoo is kept for the {len(kept)} it does not reach or verify (its tiny configs are "
        "written by hand):",
        "",
        *(f"- {k}" for k in kept),
    ]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"
