"""The trace cache on disk: exported programs (never weights) reused by later processes.

An entry is one file written by `torch.save` holding only strings, numbers, lists, dicts and the
program's lifted constant tensors, so it loads with `torch.load(weights_only=True)`; the program is
torch.export's own JSON serialisation, read back with its deserializer after checking every string
that would reach `eval` or an import (symbolic expressions, pytree contexts) and every operator it
names. Parameters and buffers are rebuilt as data-free meta tensors: a cached graph always reads the
live model's weights. Writes are atomic (a temporary file renamed into place), the directory is
owner-only, and an entry another user could have written is refused: loading must never become a
way to run someone else's code. A corrupt, truncated or stale entry is reported, removed and rebuilt.
Processes sharing the directory (workers of one job) trace a key once: the first holds a lock on it while
it traces, the others wait and then read its entry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import operator
import os
import re
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import sympy
import torch
import torch.utils._pytree as pytree
from torch._export.serde import schema
from torch._export.serde.serialize import serialize
from torch.export.graph_signature import InputKind

from ..errors import LRPGraphError

try:
    import fcntl
except ImportError:  # Windows: no lock between processes (each may trace once)
    fcntl = None
from .export import Exported
from .program_json import LoadedProgram, SchemaReader, deserialize
from .shapes import GuardSpec

FORMAT = 1
_SUFFIX = ".pt2c"
_UNEXPORTABLE = ".unexportable.json"


class Uncacheable(Exception):
    """Why a program cannot be written to, or read from, the disk cache."""


def default_directory() -> Path:
    """$LRPGRAPH_CACHE_DIR, else $XDG_CACHE_HOME/lrpgraph, else ~/.cache/lrpgraph."""
    if os.environ.get("LRPGRAPH_CACHE_DIR"):
        return Path(os.environ["LRPGRAPH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lrpgraph"


def versions() -> dict[str, str]:
    """What a cached program depends on besides the model: torch, transformers and lrpgraph versions, format."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "none"

    return {"torch": str(torch.__version__), "transformers": version("transformers"), "lrpgraph": version("lrpgraph"),
            "format": str(FORMAT)}  # fmt: skip


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
            return _deserialize(payload)
        except LRPGraphError:
            raise
        except Exception as error:
            reason = error if isinstance(error, Uncacheable) else f"unreadable entry ({type(error).__name__}: {error})"
            warnings.warn(f"lrpgraph trace cache: {path.name}: {reason}; tracing again", stacklevel=5)
            path.unlink(missing_ok=True)
            raise Uncacheable(str(reason)) from None

    def save(self, key: str, exported: Exported) -> Path:
        """Write a program atomically as a new entry of `key` (before its graph is rewritten)."""
        payload = _serialize(exported)
        taken = {p.name for p in self.entries(key)}
        index = next(i for i in range(len(taken) + 1) if f"{key}-{i}{_SUFFIX}" not in taken)
        path = self.directory / f"{key}-{index}{_SUFFIX}"
        self._write(path, lambda file: torch.save(payload, file))
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
        self._write(self.directory / f"{key}{_UNEXPORTABLE}", lambda file: file.write(text))

    def _write(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        """Write a file atomically and owner-only: a temporary file, synced, renamed into place."""
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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


def _serialize(exported: Exported) -> dict:
    program = exported.program
    live = {s.target for s in program.graph_signature.input_specs if s.kind == InputKind.BUFFER}
    constants, meta_constants = {}, []
    for name, value in program.constants.items():
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise Uncacheable(f"constant '{name}' is a {type(value).__name__}, not a plain tensor")
        if name in live:  # a non-persistent buffer: read from the live model, keep its shape only
            meta_constants.append([name, list(value.shape), _dtype_name(value.dtype)])
        else:
            constants[name] = value.detach().clone().contiguous()
    state = [
        [spec.target, spec.kind == InputKind.PARAMETER, list(t.shape), _dtype_name(t.dtype)]
        for spec in program.graph_signature.input_specs
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER)
        and (t := program.state_dict.get(spec.target)) is not None
    ]
    try:
        artifact = serialize(
            program, serialize_state_dict=False, serialize_constants=False, serialize_example_inputs=False
        )
    except Exception as error:
        raise Uncacheable(f"torch.export cannot serialise it ({type(error).__name__})") from error
    return {
        "versions": versions(),
        "program": artifact.exported_program.decode("utf-8"),
        "state": state,
        "constants": constants,
        "meta_constants": meta_constants,
        "guards": json.dumps(exported.guards.to_json()),
        "static_reason": exported.static_reason or "",
    }


def _deserialize(payload: dict) -> Exported:
    raw = json.loads(payload["program"])
    program = deserialize(_READER(schema.ExportedProgram, raw), *_state_and_constants(payload))
    _drop_unused_outputs(program)
    guards = GuardSpec.from_json(json.loads(payload["guards"]), _parse)
    return Exported(program, guards, payload["static_reason"] or None)


def _state_and_constants(payload: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The program's parameters and buffers as data-free meta tensors; its constants (live buffers as meta)."""
    constants = dict(payload["constants"])
    for name, shape, dtype in payload["meta_constants"]:
        constants[name] = torch.empty(shape, dtype=_dtype(dtype), device="meta")
    state = {}
    for name, is_parameter, shape, dtype in payload["state"]:
        tensor = torch.empty(shape, dtype=_dtype(dtype), device="meta")
        state[name] = torch.nn.Parameter(tensor, requires_grad=False) if is_parameter else tensor
    return state, constants


def _drop_unused_outputs(program: LoadedProgram) -> None:
    """The deserializer adds a getitem for every output of a multi-output op; the traced graph had the used ones."""
    graph = program.graph_module.graph
    for node in reversed(list(graph.nodes)):
        if (
            node.op == "call_function"
            and node.target is operator.getitem
            and not node.users
            and "_unused_" in node.name
        ):
            graph.erase_node(node)


# Symbolic expressions reach sympy.sympify, which evaluates them: let through numbers, quoted names,
# operators and sympy's and torch's function names only (no '.', '[' or dunder: nothing to reach with).
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?(?:e[+-]?\d+)?)|('[A-Za-z0-9_.+-]*')|([A-Za-z][A-Za-z0-9_]*)"
    r"|(\*\*|//|<=|>=|==|!=|[-+*/%(),<>&|~=]))"
)
_SYMBOL = re.compile(r"^[a-z]+\d+$")
_NAMES = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "LessThan",
        "StrictGreaterThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
        "BooleanTrue",
        "BooleanFalse",
        "true",
        "false",
        "True",
        "False",
        "Infinity",
        "NegativeInfinity",
        "oo",
        "zoo",
        "nan",
        "NaN",
        "One",
        "Zero",
        "NegativeOne",
        "Half",
        "Tuple",
        "floor",
        "ceiling",
        "sqrt",
        "Piecewise",
        "ExprCondPair",
        "positive",
        "negative",
        "integer",
        "real",
        "nonnegative",
        "nonpositive",
        "finite",
        "infinite",
        "commutative",
        "precision",
        "zero",
        "extended_real",
        "even",
        "odd",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "IntInfinity",
        "NegativeIntInfinity",
    ]
)


@functools.lru_cache(maxsize=4096)
def _safe(text: str) -> bool:
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            return text[position:].strip() == ""
        name = match.group(3)
        if name is not None and not (_SYMBOL.match(name) or name in _NAMES):
            return False
        position = match.end()
    return True


def _parse(text: str) -> Any:
    if not _safe(text):
        raise Uncacheable(f"refusing symbolic expression {text[:80]!r}")
    from torch.utils._sympy import functions

    names = {n: getattr(functions, n) for n in dir(functions) if n in _NAMES}
    return sympy.sympify(text, locals=names)


def _check_expression(expression: schema.SymExpr) -> None:
    if not _safe(expression.expr_str):
        raise Uncacheable(f"refusing symbolic expression {expression.expr_str[:80]!r}")


def _check_signature(signature: schema.ModuleCallSignature) -> None:
    for spec in (signature.in_spec, signature.out_spec):
        _check_spec(spec)


def _check_spec(text: str) -> None:
    """A pytree spec may name only types registered in this process (HF ModelOutputs: once transformers is
    imported) and nothing to import: no enum in a context (`__enum__`, which torch imports by name, however its
    JSON spells it), no type whose context torch reads with its own function (defaultdict imports a module)."""
    try:
        _, tree = json.loads(text)
    except (ValueError, TypeError):
        raise Uncacheable("unreadable pytree spec") from None
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if not isinstance(node, dict):
            raise Uncacheable("unreadable pytree spec")
        nodes.extend(node.get("children_spec") or [])
        name = node.get("type")
        if name is None:
            continue
        kind = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name)
        if kind is None:
            raise Uncacheable(f"output type not registered in this process: {name}")
        reader = pytree.SUPPORTED_SERIALIZED_TYPES[kind].from_dumpable_context
        if reader is not None and getattr(reader, "__name__", "") != "_namedtuple_deserialize":
            raise Uncacheable(f"refusing a pytree spec of {name}, whose context would be read by its own code")
        if reader is None and node.get("context") is not None and _names_an_enum(json.loads(node["context"])):
            raise Uncacheable("refusing a pytree spec that imports modules")


def _names_an_enum(value: Any) -> bool:
    if isinstance(value, dict):
        return "__enum__" in value or any(_names_an_enum(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_an_enum(v) for v in value)
    return False


def _check_operator(node: schema.Node) -> None:
    """A node may call only registered ATen-style operators and the symbolic-size arithmetic torch writes as
    `_operator.*`, `math.*` and `torch.sym_*` (torch's reader would resolve any dotted `torch.` path)."""
    if not _allowed_operator(node.target):
        raise Uncacheable(f"operator not registered in this process, or not one a trace calls: {node.target}")


_SIZE_OPERATORS = frozenset(
    [f"_operator.{n}" for n in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
                                "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "lshift", "rshift")]
    + [f"math.{n}" for n in ("trunc", "ceil", "floor", "sqrt")]
    + [f"torch.{n}" for n in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt",
                              "_sym_sqrt", "sym_sum")]
)  # fmt: skip
_FOUND: set[str] = set()  # operators found registered (one not found now may be registered later)


def _allowed_operator(target: str) -> bool:
    if target in _SIZE_OPERATORS or target in _FOUND:
        return True
    if not target.startswith("torch.ops."):
        return False
    found: Any = torch
    for part in target.split(".")[1:]:
        found = getattr(found, part, None)
        if found is None:
            return False
    if isinstance(found, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        _FOUND.add(target)
        return True
    return False


# What the deserializer would evaluate (symbolic expressions), import (pytree specs) or look up (operators),
# checked on every such object as the program's JSON is read.
_READER = SchemaReader(
    {schema.SymExpr: _check_expression, schema.ModuleCallSignature: _check_signature, schema.Node: _check_operator}
)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype):
        raise Uncacheable(f"unknown dtype {name!r}")
    return value
