"""CRP's RelMax and ActMax over a data set on Ray: the relevance walks of every input on the cluster
(`explain_dataset` recording the point, one Parquet row per input, resumable), then on the driver each input's
activation at the point (a forward), the ranking and the few conditional heatmaps of the reference inputs
(`api/reference.py`), written into the same folder and resumed from it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..api.items import as_item, targets_per_input
from ..api.reference import ReferenceExamples, UnitScores, rank_references, unit_scores
from ..engine.traced import shapes_vary
from ..errors import InputError
from .ray_job import explain_dataset
from .results import read_results


def reference_dataset(
    model: torch.nn.Module | Callable[[], torch.nn.Module],
    inputs: Sequence[Any],
    point: str,
    output: str | os.PathLike,
    target: Any = None,
    rules: Any = "epsilon",
    *,
    units: Sequence[int] | None = None,
    top: int = 5,
    tokenizer: Any = None,
    batch_size: int = 8,
    workers: int = 2,
    torch_threads: int = 1,
    address: str | None = None,
    progress: bool | None = None,
    **options: Any,
) -> ReferenceExamples:
    """`lrpgraph.reference_examples` with the walks on Ray (`explain_dataset`'s arguments), into the folder `output`:
    the rows in `output`/explained, the scores and heatmaps beside them; a rerun resumes."""
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise InputError(f"top must be a positive int, not {top!r}")
    if "record" in options or "conditions" in options:
        raise InputError("reference_dataset records the point and sets the conditions itself")
    folder = Path(output)
    run = explain_dataset(
        model, inputs, folder / "explained", target, rules, tokenizer=tokenizer, batch_size=batch_size,
        workers=workers, torch_threads=torch_threads, address=address, progress=progress, record=[point], **options,
    )  # fmt: skip
    if run.failed:
        shown = "; ".join(f"input {i}: {e}" for i, e in list(run.failed.items())[:3])
        raise InputError(f"{len(run.failed)} inputs could not be explained ({shown}); rerun to retry them")
    built = model if isinstance(model, torch.nn.Module) else model()
    inputs = list(inputs)
    items = [as_item(x, tokenizer, i) for i, x in enumerate(inputs)]
    scores = UnitScores.read(folder, len(items))
    with shapes_vary():  # inputs of many lengths: one symbolic trace from the first
        for row in read_results(folder / "explained"):
            i = row["index"]
            if not scores.done[i]:
                scores.put(i, *unit_scores(built, items[i], row["latent"][point][0], point, options))
        scores.write(folder)
        targets = targets_per_input(target, len(items))
        return rank_references(built, items, targets, rules, point, scores, units, top, folder, options)
