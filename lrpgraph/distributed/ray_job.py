"""Explain a data set on a Ray cluster: an actor pool of Ray Data, results written as batches complete.

The driver tokenizes the inputs, drops those already written to the output folder (a rerun resumes), sorts
the rest by length and cuts them into batches (one Ray Data block each, so each batch pads little). Each
actor builds the model once (from the user's factory, or from the model shipped once to it), limits torch
to its share of threads, takes the trace from the trace cache the workers share (the first traces, the
others wait for it and load it) and explains its batches with `explain_many`, writing each batch as one
Parquet file (`results.py`). An actor that dies is restarted by Ray Data and its batch retried (Ray Data's
policy: without limit; Ray has no named parameter to bound it that is not deprecated).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api.items import as_item, item_length, targets_per_input
from ..api.many import ExplainManyError, explain_many, progress_bar
from ..errors import InputError
from .results import failed, row, write_part, written


@dataclass
class RayRun:
    """What a run did: where its results are, how many inputs it explained, skipped (already written) or failed,
    and the damaged parts it found and moved aside (their inputs explained again)."""

    output: Path
    explained: int
    skipped: int
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    damaged: list[Path] = field(default_factory=list)


def explain_dataset(
    model: torch.nn.Module | Callable[[], torch.nn.Module],
    inputs: Sequence[Any],
    output: str | os.PathLike,
    target: Any = None,
    rules: Any = "epsilon",
    *,
    tokenizer: Any = None,
    batch_size: int = 8,
    workers: int = 2,
    torch_threads: int = 1,
    address: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    **options: Any,
) -> RayRun:
    """Explain every input on Ray and write one Parquet row per input to the folder `output` (see `results.py`).

    model: a function building the model (each actor calls it once), or a model (shipped once to each actor).
    inputs, target, rules, tokenizer, batch_size, options: as for `explain_many`; rows equal its results.
    workers: actors explaining at once, each with `torch_threads` threads (and as many Ray CPUs).
    address: the Ray cluster to join (default: the running one, or a local one started for this run).
    cache_dir: the trace cache the workers share (default: `output`/traces; put it on storage all nodes see).
    A rerun with the same output folder explains only the inputs not yet written without an error.
    """
    for name, value in (("batch_size", batch_size), ("workers", workers), ("torch_threads", torch_threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive int, not {value!r}")
    if not (isinstance(model, torch.nn.Module) or callable(model)):
        raise InputError(f"model must be a torch.nn.Module or a function building one, not {type(model).__name__}")
    ray = require_ray()
    started = time.perf_counter()
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = list(inputs)
    targets = targets_per_input(target, len(inputs))
    done, damaged = written(folder)
    todo = [i for i in range(len(inputs)) if i not in done]
    items = {i: as_item(inputs[i], tokenizer, i) for i in todo}
    todo.sort(key=lambda i: item_length(items[i]))
    run = RayRun(folder, explained=0, skipped=len(inputs) - len(todo), damaged=damaged)
    if not todo:
        return run
    owned = not ray.is_initialized()
    if owned:
        _join_or_start(ray, address, workers * torch_threads)
    try:
        records = [{"index": i, "payload": pickle.dumps((items[i], targets[i]))} for i in todo]
        blocks = -(-len(records) // batch_size)  # one batch each
        dataset = ray.data.from_items(records, override_num_blocks=blocks)
        explained = dataset.map_batches(
            _Explainer,
            fn_constructor_kwargs=dict(
                model=model,
                rules=rules,
                tokenizer=tokenizer,
                output=str(folder),
                torch_threads=torch_threads,
                options=dict(options, cache_dir=str(cache_dir or folder / "traces")),
            ),
            batch_size=batch_size,
            concurrency=workers,
            num_cpus=torch_threads,
        )
        batches = explained.iter_batches(batch_size=None)
        for batch in progress_bar(batches, progress, blocks):
            for index, error in zip(batch["index"], batch["error"], strict=True):
                if error:
                    run.failed[int(index)] = str(error)
                else:
                    run.explained += 1
    finally:
        if owned:
            ray.shutdown()
    run.seconds = time.perf_counter() - started
    return run


class _Explainer:
    """A Ray Data actor: the model built once, then one batch of inputs explained and written per call."""

    def __init__(self, model, rules, tokenizer, output: str, torch_threads: int, options: dict):
        torch.set_num_threads(torch_threads)
        self.model = model if isinstance(model, torch.nn.Module) else model()
        self.rules, self.tokenizer, self.output, self.options = rules, tokenizer, output, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices = [int(i) for i in batch["index"]]
        items, targets = zip(*(pickle.loads(payload) for payload in batch["payload"]), strict=True)
        try:
            results, failures = explain_many(
                self.model, list(items), list(targets), self.rules, tokenizer=self.tokenizer,
                batch_size=len(items), progress=False, **self.options,
            ), {}  # fmt: skip
        except ExplainManyError as error:
            results, failures = error.results, error.failures
        rows = [
            failed(i, failures[k]) if k in failures else row(i, results[k], items[k]) for k, i in enumerate(indices)
        ]
        write_part(self.output, rows)
        return {"index": np.array(indices), "error": np.array([r["error"] or "" for r in rows], dtype=object)}


def _join_or_start(ray: Any, address: str | None, cpus: int) -> None:
    """Join the cluster at `address` (or the one $RAY_ADDRESS / `ray start` names), else start a local one."""
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **options)
        return
    try:
        ray.init(num_cpus=cpus, **options)
    except ValueError:  # a cluster started with `ray start` is running: join it as it is
        ray.init(**options)


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("explaining on Ray needs Ray Data: pip install 'lrpgraph[ray]'") from None
    return ray
