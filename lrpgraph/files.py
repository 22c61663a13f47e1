"""Files lrpgraph writes and reads back (trace cache, result parts, reference scores): written whole or not at all,
and a file damaged afterwards set aside, never deleted, so that the work it held is redone."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .caller import warn


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int | None = None) -> Path:
    """Write `path` through a temporary file beside it, synced, then renamed into place (`mode`: its permissions):
    a crash leaves the old file or the new one, never a part of it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def set_aside(path: Path, why: str, redone: str) -> Path:
    """Move a damaged file into `damaged/` beside it (under a name not yet taken there) and say so in a warning:
    what is wrong with it (`why`) and what is done again (`redone`)."""
    folder = path.parent / "damaged"
    folder.mkdir(exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists():
        target, n = folder / f"{path.stem}.{n}{path.suffix}", n + 1
    os.replace(path, target)
    warn(f"lrpgraph: {path} {why}; moved to {target}, {redone}")
    return target
