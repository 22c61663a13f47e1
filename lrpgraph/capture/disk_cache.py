"""The trace cache on disk: exported programs (never weights) kept as files that later processes reuse.

An entry is one file of `serialise.py`'s payload, written atomically (a temporary file renamed into
place); the directory is owner-only, and an entry another user could have written is refused: loading
must never become a way to run someone else's code (what an entry may name is checked as it is read:
`untrusted.py`). A corrupt, truncated or stale entry is reported, removed and rebuilt. Processes sharing
the directory (workers of one job) trace a key once: the first holds a lock on it while it traces, the
others wait and then read its entry. A marker remembers a call structure torch.export cannot trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import LRPGraphError

try:
    import fcntl
except ImportError:  # Windows: no lock between processes (each may trace once)
    fcntl = None
from ..caller import warn
from ..files import write_atomically
from .export import Exported
from .serialise import Uncacheable, decode, encode, versions

_SUFFIX = ".pt2c"
_UNEXPORTABLE = ".unexportable.json"


def default_directory() -> Path:
    """$LRPGRAPH_CACHE_DIR, else $XDG_CACHE_HOME/lrpgraph, else ~/.cache/lrpgraph."""
    if os.environ.get("LRPGRAPH_CACHE_DIR"):
        return Path(os.environ["LRPGRAPH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lrpgraph"


def entry_key(*parts: Any) -> str:
    """The file-name key of a trace: a hash of the model's stable key, the call structure and the trace mode."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:40]


class DiskCache:
    """Traced programs under `directory`, keyed by `entry_key`; several per key (one per set of fixed dims)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).expanduser()
        if self.directory.exists():
            _check_owner(self.directory, "cache directory")
        else:
            self.directory.mkdir(parents=True, mode=0o700, exist_ok=True)  # workers may create it at once
            os.chmod(self.directory, 0o700)

    def entries(self, key: str) -> list[Path]:
        return sorted(self.directory.glob(f"{key}-*{_SUFFIX}"))

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold `key` against other processes while looking it up and tracing it."""
        if fcntl is None:
            yield
            return
        with open(self.directory / f".lock-{key}", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, path: Path) -> Exported:
        """The entry's program and guards; Uncacheable (after removing the file) if it is unusable."""
        try:
            _check_owner(path, "cache entry")
            payload = torch.load(path, weights_only=True, map_location="cpu")
            if not isinstance(payload, dict) or payload.get("versions") != versions():
                found = payload.get("versions") if isinstance(payload, dict) else None
                raise Uncacheable(f"stale entry written by {found}")
            return decode(payload)
        except LRPGraphError:
            raise
        except Exception as error:
            reason = error if isinstance(error, Uncacheable) else f"unreadable entry ({type(error).__name__}: {error})"
            warn(f"lrpgraph trace cache: {path.name}: {reason}; tracing again")
            path.unlink(missing_ok=True)
            raise Uncacheable(str(reason)) from None

    def save(self, key: str, exported: Exported) -> Path:
        """Write a program atomically as a new entry of `key` (before its graph is rewritten)."""
        payload = encode(exported)
        taken = {p.name for p in self.entries(key)}
        index = next(i for i in range(len(taken) + 1) if f"{key}-{i}{_SUFFIX}" not in taken)
        path = self.directory / f"{key}-{index}{_SUFFIX}"
        write_atomically(path, lambda file: torch.save(payload, file), 0o600)
        return path

    def unexportable(self, key: str) -> str | None:
        """Why torch.export failed for `key` in an earlier process whose call was then recorded; None if none did
        (a marker another version wrote, or an unreadable one, is removed: export is tried again)."""
        path = self.directory / f"{key}{_UNEXPORTABLE}"
        if not path.exists():
            return None
        _check_owner(path, "cache entry")
        try:
            found = json.loads(path.read_text())
            if found["versions"] == versions() and isinstance(found["reason"], str):
                return found["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        path.unlink(missing_ok=True)
        return None

    def mark_unexportable(self, key: str, reason: str) -> None:
        """Remember that torch.export cannot trace `key` (its call was recorded instead): later processes record
        at once instead of failing the export again, one after another under the lock."""
        text = json.dumps({"versions": versions(), "reason": reason}).encode()
        write_atomically(self.directory / f"{key}{_UNEXPORTABLE}", lambda file: file.write(text), 0o600)

    def info(self) -> tuple[int, int]:
        """(entries, bytes)."""
        files = list(self.directory.glob(f"*{_SUFFIX}"))
        return len(files), sum(f.stat().st_size for f in files)

    def clear(self) -> int:
        """Remove every entry and unexportable marker, and temporary files left over (an hour old: a younger one
        may be an entry another process is writing); returns how many entries there were."""
        count = 0
        for file in [*self.directory.glob(f"*{_SUFFIX}"), *self.directory.glob(f"*{_UNEXPORTABLE}")]:
            if file.name.startswith(".tmp-"):
                continue
            count += file.name.endswith(_SUFFIX)
            file.unlink(missing_ok=True)
        for file in self.directory.glob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - file.stat().st_mtime > 3600:
                    file.unlink(missing_ok=True)
        return count


def _check_owner(path: Path, what: str) -> None:
    """Refuse a file or directory another user owns or can write to."""
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise LRPGraphError(f"{what} {path} belongs to another user; refusing to use it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LRPGraphError(f"{what} {path} can be written by other users; refusing to use it (chmod go-w)")
