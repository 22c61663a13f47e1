"""Export a model call with torch.export (non-strict) into a Graph of high-level ATen ops."""

from __future__ import annotations

import traceback
import warnings

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind

from ..errors import TraceError
from .call import leaf_names
from .fold_batchnorm import fold_batchnorm
from .graph import BUFFER, CONSTANT, INPUT, PARAMETER, Graph, output_names
from .model_state import evaluation_mode
from .noop_copies import remove_noop_copies

_KINDS = {
    InputKind.USER_INPUT: INPUT,
    InputKind.PARAMETER: PARAMETER,
    InputKind.BUFFER: BUFFER,
    InputKind.CONSTANT_TENSOR: CONSTANT,
}


def export(model: torch.nn.Module, args: tuple, kwargs: dict) -> Graph:
    """Trace `model(*args, **kwargs)` in eval mode under `torch.no_grad()` into a Graph.

    High-level ops such as linear, layer_norm and scaled_dot_product_attention are kept; dropout,
    in-place ops and dtype casts are made functional. The model's own train/eval flags are restored.
    """
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
