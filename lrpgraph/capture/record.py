"""Record the ATen ops of the call that actually runs, for models torch.export cannot trace.

torch.export traces with fake tensors, so Python code that branches on tensor values (mixture-of-experts
loops over the experts that received tokens, padding logic, length checks) cannot be traced. Here the
model runs on the real inputs under `make_fx` (real tensors, pre-dispatch: the same high-level ops as an
export: linear, layer_norm, scaled_dot_product_attention) and every op that ran is recorded, each branch
as taken. The straight-line recording is then exported (static shapes) to make it functional and to give
it torch.export's node metadata, so the tracer's passes and the rules run on it unchanged. The graph is
valid for that input only: it is never cached and never reused for another call.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx.traceback as fx_traceback
import torch.utils._pytree as pytree
from torch.fx.experimental.proxy_tensor import make_fx

from ..errors import TraceError, first_line
from .export import Exported, Unruled, functional, quiet_torch_logs, user_inputs, without_stack_traces
from .graph import BUFFER, PARAMETER, is_float
from .guards import GuardSpec
from .model_state import evaluation_mode
from .quantized import DequantizedWeights
from .shapes import value_dependent_shape


class CallFailed(TraceError):
    """The model's own call failed while it was being recorded (not a limit of the recording)."""


def record_program(model: torch.nn.Module, args: tuple, kwargs: dict, unruled: Unruled) -> Exported:
    """The ops `model(*args, **kwargs)` runs, as an exported program whose leading user inputs are the model's
    parameters and buffers (named in `Exported.recorded_state`), then the call's leaves."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    leaves, in_spec = pytree.tree_flatten((args, kwargs))
    state = [*params.values(), *buffers.values()]
    out_spec: list[pytree.TreeSpec] = []
    # the call runs on copies: a forward may write its weights, buffers or inputs in place; the recording is
    # replayed once more (for the index sets it holds) on copies of the values as they were before the call
    working, pristine = _copies([*state, *leaves]), _copies([*state, *leaves])

    def call(*flat: Any) -> tuple:
        p = dict(zip(params, flat[: len(params)], strict=True))
        b = dict(zip(buffers, flat[len(params) : len(state)], strict=True))
        call_args, call_kwargs = pytree.tree_unflatten(list(flat[len(state) :]), in_spec)
        out, spec = pytree.tree_flatten(torch.func.functional_call(model, (p, b), call_args, call_kwargs))
        out_spec.append(spec)
        return tuple(out)

    try:
        with (
            evaluation_mode(model),
            torch.no_grad(),
            _module_stacks(model),
            fx_traceback.preserve_node_meta(),
            DequantizedWeights(),
        ):
            recording = make_fx(call, tracing_mode="real", pre_dispatch=True, _error_on_data_dependent_ops=False)(
                *working
            )
    except Exception as failure:
        raise _why_unrecorded(model, call, pristine, failure) from failure
    try:
        _freeze_dynamic_shapes(recording, pristine, len(state))
        with torch.no_grad(), quiet_torch_logs(), without_stack_traces():
            exported = torch.export.export(recording, tuple(working), strict=False)  # for its shapes
            program, decomposed = functional(exported, unruled, len(leaves))
    except TraceError:
        raise
    except Exception as failure:
        raise TraceError(
            f"could not record the ops of {type(model).__name__}'s call: {type(failure).__name__}: "
            f"{first_line(failure)}"
        ) from failure
    unknown = value_dependent_shape(program.graph)
    if unknown is not None:
        raise TraceError(
            f"recorded {type(model).__name__}'s call, but the shape of node '{unknown.name}' ({unknown.target}) still "
            "depends on tensor values (an op lrpgraph does not hold constant for the recorded call)"
        )
    kinds = [(PARAMETER, name) for name in params] + [(BUFFER, name) for name in buffers]
    user = user_inputs(program)[len(state) :]
    return Exported(
        program,
        GuardSpec.of_trace(program.graph, user, [f"input {i}" for i in range(len(leaves))]),
        recorded_state=kinds,
        recorded_specs=(in_spec, out_spec[0]),
        decomposed=decomposed,
    )


def _why_unrecorded(model: torch.nn.Module, call: Any, values: list[Any], failure: Exception) -> TraceError:
    """CallFailed if the call fails on its own too (run once more, plainly, on copies), else a recording limit."""
    try:
        with evaluation_mode(model), torch.no_grad():
            call(*_copies(values))
    except Exception as error:
        return CallFailed(f"{type(model).__name__}'s call failed: {type(error).__name__}: {first_line(error)}")
    return TraceError(
        f"could not record the ops of {type(model).__name__}'s call: {type(failure).__name__}: {first_line(failure)}"
    )


def _freeze_dynamic_shapes(recording: torch.fx.GraphModule, inputs: list[Any], state: int) -> None:
    """Drop what Python only branched on, and hold as constants (their values for these inputs) the index sets
    whose size depends on values (nonzero, torch.where(mask), a boolean mask's positions, a narrow's tensor
    start, repeat_interleave's counts): valid for this call, and static for export. Floating-point results (a
    masked selection of activations) stay ops, to carry relevance. An integer input that only such index sets read
    (a grid of patches, ids made unique) is held too, as a mask is (relevance that only such ids could take is a
    MissingRuleError); a float input cannot be: an error rather than a silent zero."""
    graph = recording.graph
    graph.eliminate_dead_code()
    placeholders = list(graph.find_nodes(op="placeholder"))
    used = {node for node in placeholders[state:] if node.users}
    frozen = [node for node in graph.nodes if _index_set(node)]
    masked = [node for node in graph.nodes if node.target in _INDEXING and _masks(node)]
    masks = [mask for node in masked for mask in _masks(node)]
    narrowed = [node for node in graph.nodes if node.target is torch.ops.aten.narrow.Tensor]
    starts = [node.args[2] for node in narrowed]
    repeated = [
        node
        for node in graph.nodes
        if node.target is torch.ops.aten.repeat_interleave.self_Tensor and isinstance(node.args[1], torch.fx.Node)
    ]
    wanted = [*frozen, *masks, *starts, *repeated, *(node.args[1] for node in repeated)]
    values = dict(zip(wanted, _values_of(recording, wanted, inputs), strict=True))
    for node in frozen:
        parts = [(node, values[node])] if isinstance(values[node], torch.Tensor) else _taken_parts(node, values[node])
        for part, part_value in parts:
            part.replace_all_uses_with(_constant(recording, part.name, part_value, part))
            graph.erase_node(part)
        if parts[0][0] is not node and not node.users:
            graph.erase_node(node)
    for node in masked:  # x[mask], x[mask] = v: the mask held as the positions it selects, so sizes are known
        indices = []
        for index in node.args[1]:
            if index in values:
                for d, positions in enumerate(values[index].nonzero(as_tuple=True)):
                    indices.append(_constant(recording, f"{index.name}_{d}", positions, node))
            else:
                indices.append(index)
        node.args = (node.args[0], indices, *node.args[2:])
    for node in narrowed:  # a start read from a tensor: its value this call
        node.target = torch.ops.aten.narrow.default
        node.args = (node.args[0], node.args[1], int(values[node.args[2]]), node.args[3])
    for node in repeated:  # repeats computed by the model (durations): this call's counts, and the size they make
        counts, dim = node.args[1], node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None)
        size = values[node].shape[dim] if dim is not None else values[node].numel()
        repeats = _constant(recording, f"{node.name}_repeats", values[counts], node, copy=False)
        node.args = (node.args[0], repeats, *node.args[2:])
        node.kwargs = {**node.kwargs, "output_size": int(size)}
    graph.eliminate_dead_code()
    value_of = dict(zip(placeholders, inputs, strict=False))
    cut = [node.name for node in used if not node.users and is_float(value_of.get(node))]  # ints: held as masks
    if cut:
        raise TraceError(
            f"recording would hold input(s) {', '.join(cut)} constant: an op whose output size depends on values "
            "(masked_select, …) computes from them; such a model cannot be explained by recording"
        )
    recording.recompile()


def _constant(
    recording: torch.fx.GraphModule, name: str, value: torch.Tensor, before: torch.fx.Node, copy: bool = True
) -> Any:
    """`value`, held under `_recorded_<name>`, inserted before `before`: as a copy (`copy`), because the model may
    write into what it computed (LightGlue offsets its matches' indices in place, through a view) and a held
    constant cannot be written; as the constant itself where an op reads it as a size (repeat counts)."""
    setattr(recording, f"_recorded_{name}", value)
    with recording.graph.inserting_before(before):
        held = recording.graph.create_node("get_attr", f"_recorded_{name}")
        return recording.graph.call_function(torch.ops.aten.clone.default, (held,)) if copy else held


def _copies(values: list[Any]) -> list[Any]:
    return [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in values]


# composite ops (untagged) that are nonzero underneath: torch.where(mask), nonzero(as_tuple=True)
_NONZERO_BY_ANOTHER_NAME = (torch.ops.aten.where.default, torch.ops.aten.nonzero_numpy.default)


_INDEXING = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default)


def _index_set(node: torch.fx.Node) -> bool:
    """An op whose output size depends on values and whose outputs are integer or boolean tensors."""
    val = node.meta.get("val")
    values = list(val) if isinstance(val, (tuple, list)) else [val]
    return (
        isinstance(node.target, torch._ops.OpOverload)
        and (torch.Tag.dynamic_output_shape in node.target.tags or node.target in _NONZERO_BY_ANOTHER_NAME)
        and bool(values)
        and all(isinstance(v, torch.Tensor) and not (v.is_floating_point() or v.is_complex()) for v in values)
    )


def _masks(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The boolean masks among an index op's indices."""
    return [
        index
        for index in node.args[1]
        if isinstance(index, torch.fx.Node)
        and isinstance(index.meta.get("val"), torch.Tensor)
        and index.meta["val"].dtype in (torch.bool, torch.uint8)
    ]


def _taken_parts(node: torch.fx.Node, values: Any) -> list[tuple[torch.fx.Node, torch.Tensor]]:
    """The `getitem` users of a multi-output op (torch.where(mask), nonzero(as_tuple=True)) with their values."""
    return [
        (user, values[user.args[1]])
        for user in list(node.users)
        if user.target is operator.getitem and isinstance(user.args[1], int)
    ]


def _values_of(recording: torch.fx.GraphModule, nodes: list[torch.fx.Node], inputs: list[Any]) -> list[Any]:
    """The values these nodes take for these inputs (the recording's meta holds only their shapes), each as it was
    made: copied there, before a later op of the call writes into it."""
    if not nodes:
        return []
    inputs = _copies(inputs)  # the replay writes what the call wrote
    graph, mapping = torch.fx.Graph(), {}
    graph.graph_copy(recording.graph, mapping)
    made = []
    for node in nodes:
        value = mapping[node]
        if isinstance(node.meta.get("val"), torch.Tensor):
            with graph.inserting_after(value):
                value = graph.call_function(torch.ops.aten.clone.default, (value,))
        made.append(value)
    graph.output(tuple(made))
    graph.eliminate_dead_code()
    with torch.no_grad():
        return list(torch.fx.GraphModule(recording, graph)(*inputs))


@contextmanager
def _module_stacks(model: torch.nn.Module) -> Iterator[None]:
    """Give each recorded node the stack of the model's modules it ran in (as torch.export's nn_module_stack),
    through global module hooks that act only on this thread and this model's modules."""
    paths = {id(module): name for name, module in model.named_modules(remove_duplicate=False)}
    thread = threading.get_ident()
    stack: list[tuple[str, type]] = []

    def publish() -> None:
        fx_traceback.current_meta["nn_module_stack"] = OrderedDict((path, (path, kind)) for path, kind in stack)

    def enter(module: torch.nn.Module, _args: Any) -> None:
        if threading.get_ident() == thread and id(module) in paths:
            stack.append((paths[id(module)], type(module)))
            publish()

    def leave(module: torch.nn.Module, _args: Any, _out: Any) -> None:
        if threading.get_ident() == thread and id(module) in paths and stack:
            stack.pop()
            publish()

    hooks = [
        torch.nn.modules.module.register_module_forward_pre_hook(enter),
        torch.nn.modules.module.register_module_forward_hook(leave, always_call=True),
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
