"""Normalise what users pass as model inputs into the model's call (args, kwargs) and name every tensor leaf."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..errors import InputError


def as_call(inputs: Any) -> tuple[tuple, dict]:
    """A tensor, a tuple/list of positional inputs, or a mapping of keyword inputs → (args, kwargs)."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):  # dict, tokenizer BatchEncoding
        return (), {str(k): v for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise InputError(
        f"inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"not {type(inputs).__name__}"
    )


def prepare_call(model: torch.nn.Module, inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) for the model's forward; asks models that can return caches not to (by name, or through
    **kwargs when their config has use_cache), and leaves out the token_type_ids a tokenizer adds for a
    model whose forward has no such parameter."""
    args, kwargs = as_call(inputs)
    if _tokenizer_output(inputs) and "token_type_ids" in kwargs and not accepts(model, "token_type_ids"):
        del kwargs["token_type_ids"]  # a tokenizer's habit the model does not read (it would land in **kwargs)
    if "use_cache" not in kwargs and (accepts(model, "use_cache") or _cache_through_kwargs(model)):
        kwargs["use_cache"] = False
    return args, kwargs


def _cache_through_kwargs(model: torch.nn.Module) -> bool:
    """A generating model (decoder) whose config says it returns caches and whose forward takes use_cache only
    through **kwargs. (Encoders keep their dynamic-shape trace: torch.export cannot yet give **kwargs entries
    dynamic shapes, so passing one there costs a static trace.)"""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None) is None:
        return False
    generates = getattr(model, "can_generate", None)
    decoder = getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False)
    if not (decoder or (callable(generates) and generates())):
        return False
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _tokenizer_output(inputs: Any) -> bool:
    return type(inputs).__name__ == "BatchEncoding"


def accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether the model's forward names this parameter."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def leaf_names(model: torch.nn.Module, args: tuple, kwargs: dict) -> list[str]:
    """One readable name per flattened (args, kwargs) leaf: the keyword, or the forward parameter name."""
    params = _positional_names(model, len(args))
    names = []
    for path, _ in pytree.tree_flatten_with_path((args, kwargs))[0]:
        top, *rest = path[1:]
        base = params[top.idx] if path[0].idx == 0 else str(top.key)
        suffix = "".join(f".{getattr(k, 'key', getattr(k, 'idx', k))}" for k in rest)
        names.append(base + suffix)
    return names


def _positional_names(model: torch.nn.Module, count: int) -> list[str]:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return [f"args_{i}" for i in range(count)]
    names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [names[i] if i < len(names) else f"args_{i}" for i in range(count)]


AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


@contextmanager
def without_autocast() -> Iterator[None]:
    """Autocast off wherever it is on: a model is traced and run in its own dtypes. (A graph traced in float32 and
    run under autocast fails its dtype checks, and a trace made under autocast would be cached as if it were not.)"""
    with ExitStack() as stack:
        for device_type in AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield
