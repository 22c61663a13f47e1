"""Trace a model into a graph of high-level ATen ops with torch.export (non-strict), cached per input signature."""

from __future__ import annotations

import inspect
import traceback
import warnings
import weakref
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind

from .errors import TraceError
from .graph import BUFFER, CONSTANT, INPUT, PARAMETER, Graph, output_names
from .inputs import as_call, leaf_names
from .model_state import evaluation_mode
from .passes.fold_batchnorm import fold_batchnorm
from .passes.noop_copies import remove_noop_copies

_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, Graph]] = weakref.WeakKeyDictionary()
_KINDS = {
    InputKind.USER_INPUT: INPUT,
    InputKind.PARAMETER: PARAMETER,
    InputKind.BUFFER: BUFFER,
    InputKind.CONSTANT_TENSOR: CONSTANT,
}


def trace(model: torch.nn.Module, inputs: Any) -> Graph:
    """Export `model` called on `inputs` into a Graph, reusing the cached one for the same signature.

    The model is traced in eval mode (its own train/eval flags are restored afterwards) and under
    `torch.no_grad()`; high-level ops such as linear, layer_norm and scaled_dot_product_attention
    are kept, dropout, in-place ops and dtype casts are made functional.
    """
    args, kwargs = prepare_call(model, inputs)
    key = signature(model, args, kwargs)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = _export(model, args, kwargs)
    return per_model[key]


def prepare_call(model: torch.nn.Module, inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) for the model's forward; asks models that can return caches not to."""
    args, kwargs = as_call(inputs)
    if "use_cache" not in kwargs and _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    return args, kwargs


def signature(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
    """What a traced graph is specialised to: input structure, shapes, dtypes, devices, other values."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    parts: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), leaf.dtype, str(leaf.device)))
        else:
            parts.append((type(leaf).__name__, repr(leaf)))
    parts.append(_model_fingerprint(model))
    return tuple(parts)


def _model_fingerprint(model: torch.nn.Module) -> tuple:
    """What of the model a traced graph depends on: its modules, hooks, parameter shapes and dtypes, config."""
    modules = tuple(
        (name, id(m), type(m).__qualname__, len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.named_modules()
    )
    params = tuple((name, tuple(p.shape), str(p.dtype), str(p.device)) for name, p in model.named_parameters())
    config = getattr(model, "config", None)
    settings = repr(sorted((k, repr(v)) for k, v in vars(config).items())) if config is not None else ""
    return modules, params, settings


def clear_cache(model: torch.nn.Module | None = None) -> None:
    """Forget traced graphs (of one model, or all), e.g. after swapping submodules of a model."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _export(model: torch.nn.Module, args: tuple, kwargs: dict) -> Graph:
    try:
        with evaluation_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, args=args, kwargs=kwargs, strict=False)
            program = program.run_decompositions({})
    except Exception as error:
        raise TraceError(_describe_failure(model, error)) from None
    fold_batchnorm(program.graph_module)
    remove_noop_copies(program.graph_module)
    return _to_graph(model, program, args, kwargs)


def _to_graph(model: torch.nn.Module, program: torch.export.ExportedProgram, args: tuple, kwargs: dict) -> Graph:
    gm = program.graph_module
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    names = iter(leaf_names(model, args, kwargs))
    kinds, input_names, state_names, constants = {}, {}, {}, {}
    for node, spec in zip(placeholders, program.graph_signature.input_specs, strict=True):
        kind = _KINDS.get(spec.kind)
        if kind is None:
            raise TraceError(f"unsupported graph input kind {spec.kind} for '{node.name}'")
        kinds[node] = kind
        if kind == INPUT:
            input_names[node] = next(names)
        elif kind in (PARAMETER, BUFFER):
            state_names[node] = spec.target
        else:
            constants[node] = program.constants[spec.target]
    out_spec = program.call_spec.out_spec
    output_node = gm.graph.output_node()
    return Graph(
        module=gm,
        kinds=kinds,
        input_names=input_names,
        state_names=state_names,
        constants=constants,
        in_spec=program.call_spec.in_spec,
        out_spec=out_spec,
        outputs=list(pytree.tree_leaves(output_node.args[0])),
        output_names=output_names(out_spec),
    )


def _describe_failure(model: torch.nn.Module, error: BaseException) -> str:
    """A few lines: what failed, in which of the model's modules, at which source line."""
    names = {id(m): name for name, m in model.named_modules()}
    where, line = None, None
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            where = (names[id(owner)] or "<model>", type(owner).__name__)
            line = f"{frame.f_code.co_filename}:{lineno}"
    message = str(error).strip().splitlines()
    summary = " ".join(message[:3])[:600] if message else ""
    text = f"could not trace {type(model).__name__} with torch.export (non-strict): {type(error).__name__}: {summary}"
    if where:
        text += f"\n  in module '{where[0]}' ({where[1]}) at {line}"
    text += (
        "\n  hint: call the model the way its forward expects (a tensor, a tuple or a dict of keyword "
        "inputs); data-dependent Python control flow cannot be traced"
    )
    return text
