"""Results of a distributed run as Parquet: one row per input, keyed by its index, one file per batch.

A batch's file is written whole (to a temporary name, then renamed) under a name fixed by the indices it
holds, so a batch explained twice (a worker died after writing it and the batch was retried) replaces its
own file instead of adding rows. Rerunning a job skips every index already written without an error.

Columns: index, target (the class or token explained), tokens (input ids, when the input had them),
`relevance.<input>` (flattened, float32) with `shape.<input>`, `latent.<point>` (flattened, float64, for points
given to `record=`) with `shape.latent.<point>`, seed, input_total, absorbed (JSON: where the
rest of the seed went) and error (null, or why the input could not be explained).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..api.explanation import Explanation

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
    indices = sorted(r["index"] for r in rows)
    digest = hashlib.sha256(repr(indices).encode()).hexdigest()[:16]
    path = directory / f"part-{indices[0]:09d}-{digest}.parquet"
    columns = sorted({key for r in rows for key in r})
    table = pa.Table.from_pylist([{key: r.get(key) for key in columns} for r in rows])
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as file:
            pq.write_table(table, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before it gets its name: a crash leaves the old part or the new one
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def written(directory: str | os.PathLike) -> set[int]:
    """Indices of the inputs already explained (without an error) in this output folder."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for path in sorted(Path(directory).glob(PART)):
        table = pq.read_table(path, columns=["index", "error"]).to_pydict()
        done.update(i for i, error in zip(table["index"], table["error"], strict=True) if error is None)
    return done


def read_results(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of an output folder, by index, relevance as tensors in their shapes (`relevance`: {input: tensor}).

    An input written more than once (explained with an error, then again by a rerun) is read as its latest
    successful row.
    """
    import pyarrow.parquet as pq

    rows: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(directory).glob(PART), key=lambda p: p.stat().st_mtime_ns):
        for r in pq.read_table(path).to_pylist():
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
