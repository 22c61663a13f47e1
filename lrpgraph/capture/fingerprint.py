"""What a traced graph depends on, as keys: the call's structure, and the model's make-up.

A graph bakes in everything the model's forward read while it was traced, except the values of
parameters and buffers (read live at every call): each module's class and plain attributes
(LeakyReLU's slope, a norm's eps, `self.scale`), unregistered tensor attributes (lifted as
constants), hooks, the config, and parameter and buffer names, shapes and dtypes. `model_key`
covers all of them. Objects are identified by a token that a new object can never reuse (unlike
`id`), tensors also by their version counter, so in-place edits and replacements both change the
key. A value that cannot be fingerprinted makes the model uncacheable (`Unfingerprintable`):
re-tracing is slower, a stale graph would be wrong.

`stable=True` gives the same key in terms that survive the process (for the trace cache on disk):
classes by name and source file contents, tensors by content.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import itertools
import types
import weakref
from typing import Any

import torch
import torch.utils._pytree as pytree

_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))  # _parameters, _buffers, hook dicts, training, …
_HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
)
_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_NAMED = (torch.dtype, torch.device, torch.Size, torch.layout, torch.memory_format, enum.Enum, type)
# attributes that differ between processes and never reach a forward (transformers' config identity hash)
_VOLATILE = frozenset({"_original_object_hash"})
_MAX_DEPTH = 12
_MAX_TENSOR_BYTES = 1 << 24  # unregistered tensors larger than this are not hashed for the disk cache

_TOKENS: dict[int, tuple[Any, int]] = {}  # id → (weak reference, or the object itself when it has none; token)
_COUNTER = itertools.count()


class Unfingerprintable(Exception):
    """A value a traced graph may depend on that has no cheap fingerprint; its message names it."""


def token(obj: Any) -> int:
    """A number identifying `obj` for as long as it lives; a later object never gets the same one.

    Objects that cannot be weakly referenced are kept alive here, so that their id stays theirs.
    """
    key = id(obj)
    entry = _TOKENS.get(key)
    if entry is not None:
        held = entry[0]() if isinstance(entry[0], weakref.ref) else entry[0]
        if held is obj:
            return entry[1]
    number = next(_COUNTER)
    try:
        reference: Any = weakref.ref(obj, lambda ref, key=key: _forget(key, ref))
    except TypeError:
        reference = obj
    _TOKENS[key] = (reference, number)
    return number


def _forget(key: int, ref: weakref.ref) -> None:
    entry = _TOKENS.get(key)
    if entry is not None and entry[0] is ref:
        del _TOKENS[key]


def call_structure(args: tuple, kwargs: dict) -> tuple:
    """The call's structure: pytree layout, each tensor's dtype, device and rank, every other leaf's value."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    parts: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((leaf.dtype, str(leaf.device), leaf.dim()))
        else:
            parts.append((type(leaf).__name__, repr(leaf)))
    return tuple(parts)


def model_key(model: torch.nn.Module, stable: bool = False) -> tuple:
    """Everything of the model a traced graph depends on; raises Unfingerprintable when it cannot be known."""
    walker = _Fingerprint(stable)
    modules = tuple(
        (name, walker.identity(m), _class_name(type(m)), walker.attributes(name, m), walker.hooks(m))
        for name, m in model.named_modules()
    )
    state = tuple(
        (name, tuple(t.shape), str(t.dtype), str(t.device))
        for named in (model.named_parameters(), model.named_buffers())
        for name, t in named
    )
    global_hooks = tuple(
        walker.value("<global hooks>", tuple(getattr(torch.nn.modules.module, d).values()), 0)
        for d in ("_global_forward_hooks", "_global_forward_pre_hooks")
    )
    sources = tuple(sorted(walker.classes.items())) if stable else ()
    return modules, state, global_hooks, sources


class _Fingerprint:
    """One walk over a model's modules; values seen twice (a shared config) are fingerprinted once."""

    def __init__(self, stable: bool):
        self.stable = stable
        self.memo: dict[int, tuple[Any, Any]] = {}  # id → (the object, kept alive so its id stays its own; key)
        self.classes: dict[str, str] = {}  # class name → hash of its source file (stable keys)

    def identity(self, module: torch.nn.Module) -> Any:
        if self.stable:
            self.classes.setdefault(_class_name(type(module)), _source_hash(type(module)))
            return None
        return token(module)

    def attributes(self, where: str, module: torch.nn.Module) -> tuple:
        return tuple(
            (key, self.value(f"{where or '<model>'}.{key}", value, 0))
            for key, value in vars(module).items()
            if key not in _MODULE_INTERNALS
        )

    def hooks(self, module: torch.nn.Module) -> tuple:
        return tuple(
            (d, tuple((k, self.value("<hook>", fn, 0)) for k, fn in getattr(module, d, {}).items())) for d in _HOOKS
        )

    def value(self, where: str, value: Any, depth: int) -> Any:
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, _NAMED):
            return repr(value)
        if depth > _MAX_DEPTH:
            raise Unfingerprintable(f"{where} is nested too deeply to fingerprint")
        seen = self.memo.get(id(value))
        if seen is not None and seen[0] is value:
            return seen[1]
        found = self._compound(where, value, depth)
        self.memo[id(value)] = (value, found)
        return found

    def _compound(self, where: str, value: Any, depth: int) -> Any:
        deeper = depth + 1
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, tuple(self.value(where, v, deeper) for v in value))
        if isinstance(value, dict):
            items = sorted(((k, v) for k, v in value.items() if k not in _VOLATILE), key=lambda kv: repr(kv[0]))
            return ("dict", tuple((repr(k), self.value(f"{where}[{k!r}]", v, deeper)) for k, v in items))
        if isinstance(value, (set, frozenset)):
            return ("set", tuple(sorted(repr(self.value(where, v, deeper)) for v in value)))
        if isinstance(value, torch.Tensor):
            return self._tensor(where, value)
        if isinstance(value, weakref.ReferenceType):  # e.g. an LSTM's references to its own weights
            return ("weakref", self.value(where, value(), deeper))
        if isinstance(value, torch.nn.Module):
            return ("module", _class_name(type(value)) if self.stable else token(value))
        if isinstance(value, functools.partial):
            return ("partial", self.value(where, (value.func, value.args, value.keywords), deeper))
        if isinstance(value, types.MethodType):  # its function may be a partial (torchao's tensor methods)
            return ("method", self.value(where, value.__func__, deeper), self.value(where, value.__self__, deeper))
        if callable(value) and hasattr(value, "__qualname__"):
            return self._function(where, value)
        if hasattr(value, "__dict__"):
            return (_class_name(type(value)), self.value(where, dict(vars(value)), deeper))
        raise Unfingerprintable(f"{where} ({type(value).__name__}) cannot be fingerprinted")

    def _tensor(self, where: str, tensor: torch.Tensor) -> Any:
        described = (tuple(tensor.shape), str(tensor.dtype), str(tensor.device))
        if not self.stable:
            return ("tensor", token(tensor), tensor._version, *described)
        if tensor.numel() * tensor.element_size() > _MAX_TENSOR_BYTES or tensor.device.type == "meta":
            raise Unfingerprintable(f"{where} is a large tensor attribute; its trace is not kept on disk")
        data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
        return ("tensor", hashlib.sha256(data).hexdigest(), *described)

    def _function(self, where: str, fn: Any) -> Any:
        name = (getattr(fn, "__module__", None), fn.__qualname__)
        if not self.stable:
            return ("function", *name, token(fn))
        if "<lambda>" in fn.__qualname__ or "<locals>" in fn.__qualname__:
            raise Unfingerprintable(f"{where} is a local function; its trace is not kept on disk")
        return ("function", *name)


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def _source_hash(cls: type) -> str:
    """Hash of the file defining a class (read once per process): edits to model code change stable keys."""
    try:
        path = inspect.getsourcefile(cls)
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except (TypeError, OSError):
        return "no-source"
