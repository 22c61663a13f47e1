"""Results of a distributed run as Parquet: one row per input, keyed by its index, one file per batch.

A batch's file is written whole (to a temporary name, then renamed) under a name fixed by the indices it
holds, so a batch explained twice (a worker died after writing it and the batch was retried) replaces its
own file instead of adding rows. Rerunning a job skips every index already written without an error. A part
damaged after it was written (truncated by a copy, a disk error), or whose rows do not match its name, is moved
into the folder's `damaged/` (never deleted) and its inputs are explained again; reading results names such a
part and reads the rest.

Columns: index, target (the class or token explained), tokens (input ids, when the input had them),
`relevance.<input>` (flattened, float32) with `shape.<input>`, `latent.<point>` (flattened, float64, for points
given to `record=`) with `shape.latent.<point>`, seed, input_total, absorbed (JSON: where the
rest of the seed went) and error (null, or why the input could not be explained).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..api.explanation import Explanation
from ..caller import warn
from ..errors import first_line
from ..files import set_aside, write_atomically

PART = "part-*.parquet"


def row(index: int, ex: Explanation, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One explained input as a row."""
    seed = ex.seed
    values = {
        "index": index,
        "target": int(seed.reshape(-1).nonzero()[0]) % seed.shape[-1] if seed.count_nonzero() else None,
        "tokens": inputs["input_ids"].reshape(-1).tolist() if "input_ids" in inputs else None,
        "seed": float(seed.sum()),
        "input_total": float(ex.conservation.input_total.sum()),
        "absorbed": json.dumps(ex.conservation.absorbed),
        "error": None,
    }
    for name, relevance in ex.relevance.items():
        values[f"relevance.{name}"] = relevance.detach().float().reshape(-1).tolist()
        values[f"shape.{name}"] = list(relevance.shape)
    for point, relevance in ex.latent.items():  # record=: relevance at latent points, float64 (summed later)
        values[f"latent.{point}"] = relevance.detach().double().reshape(-1).tolist()
        values[f"shape.latent.{point}"] = list(relevance.shape)
    return values


def failed(index: int, error: BaseException) -> dict[str, Any]:
    """An input that could not be explained, as a row saying why (explained again by a rerun)."""
    return {"index": index, "error": f"{type(error).__name__}: {error}"}


def write_part(directory: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write one batch's rows atomically, under a name fixed by their indices."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    path = directory / part_name([r["index"] for r in rows])
    columns = sorted({key for r in rows for key in r})
    table = pa.Table.from_pylist([{key: r.get(key) for key in columns} for r in rows])
    return write_atomically(path, lambda file: pq.write_table(table, file))


def part_name(indices: list[int]) -> str:
    """The file name of the part holding these inputs' rows."""
    indices = sorted(indices)
    digest = hashlib.sha256(repr(indices).encode()).hexdigest()[:16]
    return f"part-{indices[0]:09d}-{digest}.parquet"


def _damage(path: Path, columns: list[str] | None = None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """A part's rows (these columns), or why it cannot be trusted: unreadable, or rows that do not match its name."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path, columns=columns).to_pylist()
    except Exception as error:  # pyarrow's ArrowInvalid, an OSError: whatever the damage, the part is not read
        return None, f"cannot be read ({type(error).__name__}: {first_line(error)})"
    indices = [r.get("index") for r in rows]
    if not rows or None in indices or part_name(indices) != path.name:
        return None, "holds rows that do not match its name"
    return rows, None


def written(directory: str | os.PathLike) -> tuple[set[int], list[Path]]:
    """Indices of the inputs already explained (without an error) in this output folder, and the damaged parts moved
    aside into `damaged/` (said in a warning), whose inputs are then explained again."""
    done: set[int] = set()
    moved: list[Path] = []
    for path in sorted(Path(directory).glob(PART)):
        rows, why = _damage(path, ["index", "error"])
        if why is not None:
            moved.append(set_aside(path, why, "its inputs are explained again"))
            continue
        done.update(r["index"] for r in rows if r["error"] is None)
    return done, moved


def read_results(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of an output folder, by index, relevance as tensors in their shapes (`relevance`: {input: tensor}).

    An input written more than once (explained with an error, then again by a rerun) is read as its latest
    successful row. A damaged part is named in a warning and skipped (a rerun of the job moves it aside and
    explains its inputs again).
    """
    rows: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(directory).glob(PART), key=lambda p: p.stat().st_mtime_ns):
        part, why = _damage(path)
        if why is not None:
            warn(f"lrpgraph: {path} {why}; its rows are not read (rerun the job to explain them again)")
            continue
        for r in part:
            if r["index"] in rows and r.get("error") is not None:
                continue
            names = [k.removeprefix("relevance.") for k, v in r.items() if k.startswith("relevance.") and v is not None]
            relevance = {name: torch.tensor(r[f"relevance.{name}"]).reshape(r[f"shape.{name}"]) for name in names}
            points = [k.removeprefix("latent.") for k, v in r.items() if k.startswith("latent.") and v is not None]
            latent = {
                p: torch.tensor(r[f"latent.{p}"], dtype=torch.float64).reshape(r[f"shape.latent.{p}"]) for p in points
            }
            plain = {k: v for k, v in r.items() if not k.startswith(("relevance.", "shape.", "latent."))}
            if plain.get("absorbed") is not None:
                plain["absorbed"] = json.loads(plain["absorbed"])
            rows[r["index"]] = {**plain, "relevance": relevance, "latent": latent}
    return [rows[i] for i in sorted(rows)]
