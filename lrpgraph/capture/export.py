"""Export a model call with torch.export (non-strict) into a Graph of high-level ATen ops.

The export keeps dimensions symbolic where the model allows it (`Dim.AUTO`), so one graph serves
every batch size and sequence length; torch fixes the others (a dimension a weight's shape or the
model's Python code depends on). Which dimensions are asked: "batch-and-ids" (the default) asks the
first dimension of every tensor and every dimension of integer inputs (token ids, masks,
positions); "all" also asks the other dimensions of float inputs (image sizes, audio frames,
embedded sequences). Those are asked only once a call varies them, because symbolic image sizes
can make tracing slow by orders of magnitude (Swin: 1.3 s static, 1.8 s with a symbolic batch,
55 s with symbolic height and width), while a symbolic sequence length costs 2–4× a static trace.
Traced at a size of 1, a dimension would be fixed to 1, so the example traced has 2 where the call
has 1 (torch.export's own contract: a graph traced at sizes ≥ 2 also serves size 1). A model's code
can break that contract (it fixes the batch to the 2 it saw): a trace that does not serve the call
itself is dropped for the next example. `Graph.check` then tells which calls the graph serves.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx
from torch.export import Dim
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx import config as fx_config
from torch.fx._lazy_graph_module import _LazyGraphModule

from ..errors import TraceError, first_line
from .call import leaf_names
from .canonical import canonicalise, decomposition, fresh_in_place_as_functional, fused_ops, is_functional, picked
from .graph import BUFFER, CONSTANT, INPUT, PARAMETER, Graph, output_names
from .guards import GuardCheck, GuardSpec
from .model_state import evaluation_mode
from .program_json import LoadedProgram
from .quantized import DequantizedWeights
from .scans import scans_as_ops
from .shapes import value_dependent_shape

_KINDS = {
    InputKind.USER_INPUT: INPUT,
    InputKind.PARAMETER: PARAMETER,
    InputKind.BUFFER: BUFFER,
    InputKind.CONSTANT_TENSOR: CONSTANT,
}


@dataclass
class Exported:
    """An exported program (no weights of its own) and the conditions it holds under: what the disk cache keeps."""

    program: torch.export.ExportedProgram | LoadedProgram  # exported here, or read from the trace cache
    guards: GuardSpec
    static_reason: str | None = None  # why the shapes are static, when dynamic tracing failed
    # a recording (`record.py`): (kind, name) of the leading user inputs that are the model's parameters and
    # buffers, and the call's own (in_spec, out_spec); such a program is valid for its one call only
    recorded_state: list[tuple[str, str]] | None = None
    recorded_specs: tuple[pytree.TreeSpec, pytree.TreeSpec] | None = None
    decomposed: dict[str, int] = field(default_factory=dict)  # ops with no rule torch decomposed: op → nodes

    @functools.cached_property
    def check(self) -> GuardCheck:
        """The conditions compiled once: which calls the program serves."""
        return GuardCheck(self.guards)


DIMENSIONS = ("static", "batch-and-ids", "all")


Unruled = Callable[[fx.Node], bool]  # the nodes whose op has no rule and may carry relevance: decomposed by torch


def _none(node: fx.Node) -> bool:
    return False


def export(model: torch.nn.Module, args: tuple, kwargs: dict, dimensions: str = "batch-and-ids") -> Graph:
    """Trace `model(*args, **kwargs)` into a Graph (see `export_program`, `to_graph`)."""
    return to_graph(model, export_program(model, args, kwargs, dimensions), args, kwargs)


def export_program(
    model: torch.nn.Module, args: tuple, kwargs: dict, dimensions: str = "batch-and-ids", unruled: Unruled = _none
) -> Exported:
    """Trace `model(*args, **kwargs)` in eval mode under `torch.no_grad()`.

    dimensions: which to keep symbolic where the model allows it (DIMENSIONS); a model that cannot be
    traced so is traced with static shapes. High-level ops such as linear, layer_norm and
    scaled_dot_product_attention are kept; dropout, in-place ops and dtype casts are made functional.
    The model's own train/eval flags are restored. `unruled` picks nodes whose ops torch then decomposes (where its
    decomposition table has them) into ops that have rules.
    """
    names = leaf_names(model, args, kwargs)
    leaves = pytree.tree_leaves((args, kwargs))
    reason = None
    for example in _examples(args, kwargs, dimensions == "all") if dimensions != "static" else []:
        try:
            dynamic = _dynamic_shapes(model, *example, dimensions == "all")
            exported = _export(model, *example, dynamic, names, unruled)
        except Exception as failure:  # try a smaller change to the example, then static shapes
            reason = reason or f"{type(failure).__name__}: {first_line(failure)}"
            continue
        broken = exported.check.violations(leaves)
        if broken:  # the model's code fixed a widened size (a batch of 2 only): trace a smaller change
            reason = reason or f"traced for {broken[0].condition} only"
            continue
        return _with_known_shapes(model, exported)
    try:
        exported = _export(model, args, kwargs, None, names, unruled)
        exported.static_reason = reason
    except Exception as failure:
        raise TraceError(_describe_failure(model, failure)) from failure
    return _with_known_shapes(model, exported)


def _with_known_shapes(model: torch.nn.Module, exported: Exported) -> Exported:
    """The program, unless an activation's shape depends on tensor values (an index set's size, sizes read
    with .tolist()): such a graph cannot be planned before it runs, so it is a trace failure."""
    node = value_dependent_shape(exported.program.graph)
    if node is not None:
        where = next(reversed((node.meta.get("nn_module_stack") or {"": ("", "")}).values()))[0] or "<model>"
        raise TraceError(
            f"{type(model).__name__}'s activation shapes depend on tensor values: node '{node.name}' ({node.target}) "
            f"in module '{where}' has shape {tuple(node.meta['val'].shape)}; such a model can only be recorded "
            "call by call (tracer='auto' or 'record')"
        )
    return exported


def _plain_copy(t: torch.Tensor) -> torch.Tensor:
    return t.clone(memory_format=torch.contiguous_format) if t._base is not None or not t.is_contiguous() else t


def _export(
    model: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any, names: list[str], unruled: Unruled
) -> Exported:
    # views (a slice of a generated sequence) make torch.export's input guards fail: trace on plain copies
    args, kwargs = pytree.tree_map_only(torch.Tensor, _plain_copy, (args, kwargs))
    with (
        evaluation_mode(model),
        torch.no_grad(),
        warnings.catch_warnings(),
        quiet_torch_logs(),
        without_stack_traces(),
        DequantizedWeights(),
        scans_as_ops(),
    ):
        warnings.simplefilter("ignore")
        program = torch.export.export(model, args=args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, strict=False)
        program, decomposed = functional(program, unruled, len(user_inputs(program)))
    return Exported(program, GuardSpec.of_trace(program.graph, user_inputs(program), names), decomposed=decomposed)


_ROUNDS = 3  # a decomposition's ops may have no rule either: decomposed again, this many times at most
_DEAD_ENDS: set[frozenset] = set()  # sets of ops whose decompositions, tried here, gave parts without rules


def functional(
    program: torch.export.ExportedProgram, unruled: Unruled = _none, calls: int = 0
) -> tuple[torch.export.ExportedProgram, dict[str, int]]:
    """The program with no in-place ops (torch makes it functional if needed), fused LSTM / GRU / RNN layers
    decomposed into their matrix products, gates and pointwise ops, and the ops of `unruled` nodes computed from the
    last `calls` user inputs decomposed by torch's own table (then their parts', in turn), as far as torch can
    decompose the program; with how many nodes of each op were decomposed so."""
    fresh_in_place_as_functional(program.graph)
    if not is_functional(program.graph):
        program = program.run_decompositions({})
    fused = fused_ops(program.graph)
    program = program.run_decompositions(fused) if fused else program
    decomposed: dict[str, int] = {}
    nodes = picked(program.graph, unruled, _calls(program, calls))
    for _ in range(_ROUNDS):
        table = {n.target: d for n in nodes if (d := decomposition(n.target)) is not None}
        if not table or frozenset(table) in _DEAD_ENDS:
            break
        try:
            candidate = program.run_decompositions(table)
        except Exception:  # torch cannot re-trace this program: its ops stay as they are (a missing rule says so)
            break
        after = picked(candidate.graph, unruled, _calls(candidate, calls))
        dead_ends = {n.target for n in after if decomposition(n.target) is None} - {n.target for n in nodes}
        if dead_ends:  # the parts have no rule either (prims.prod for cumprod, prims.floor): keep the ops themselves
            _DEAD_ENDS.add(frozenset(table))  # and do not re-trace for them again in this process
            break
        if _has_tokens(candidate):
            break  # side effects
        for node in nodes:
            if node.target in table:
                decomposed[str(node.target)] = decomposed.get(str(node.target), 0) + 1
        program, nodes = candidate, after
    return program, decomposed


def _calls(program: torch.export.ExportedProgram, calls: int) -> list[fx.Node]:
    """The placeholders of the last `calls` user inputs (the call's own, where a recording leads with the state)."""
    return user_inputs(program)[-calls:] if calls else []


def _has_tokens(program: Any) -> bool:
    """Effect tokens: torch threads them through ops with side effects, which the graph cannot take."""
    return any(spec.kind == InputKind.TOKEN for spec in program.graph_signature.input_specs)


def user_inputs(program: torch.export.ExportedProgram) -> list[fx.Node]:
    """The placeholders of the call's own inputs (not parameters, buffers or lifted constants), in order."""
    return [
        node
        for node, spec in zip(
            program.graph.find_nodes(op="placeholder"), program.graph_signature.input_specs, strict=True
        )
        if spec.kind == InputKind.USER_INPUT
    ]


@contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Keep torch from printing partial graphs to stderr while a trace is tried (a failure is raised, with
    its own message, and a failed try is often followed by one that works)."""
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def without_stack_traces() -> Iterator[None]:
    """Trace without the Python stack of every node (node.meta["stack_trace"], which nothing here reads): its
    capture and symbolisation are a tenth of a first explain (0.15 s of 1.45 s, an 8-layer Llama). Under the
    export lock, as every trace is."""
    saved = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = saved


def _examples(args: tuple, kwargs: dict, everything: bool) -> list[tuple[tuple, dict]]:
    """Calls to trace: size-1 dimensions asked dynamic made 2, then only batch dimensions, then the call itself."""
    candidates = [_widened(args, kwargs, everything), _widened(args, kwargs, None), (args, kwargs)]
    unique: list[tuple[tuple, dict]] = []
    for candidate in candidates:
        if not any(_same_call(candidate, u) for u in unique):
            unique.append(candidate)
    return unique


def _widened(args: tuple, kwargs: dict, everything: bool | None) -> tuple[tuple, dict]:
    """The call with size-1 dimensions doubled: those asked dynamic (`everything` as in `_dynamic_shapes`),
    or with None the first dimension of each tensor only."""

    def widen(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0:
            return leaf
        every = everything or (everything is not None and not leaf.is_floating_point())
        for d in range(leaf.dim() if every else 1):
            if leaf.shape[d] == 1:
                leaf = torch.cat([leaf, leaf], dim=d)
        return leaf

    return pytree.tree_map(widen, (args, kwargs))


def _same_call(a: tuple, b: tuple) -> bool:
    shapes = [[tuple(x.shape) if isinstance(x, torch.Tensor) else x for x in pytree.tree_leaves(c)] for c in (a, b)]
    return shapes[0] == shapes[1]


def _dynamic_shapes(model: torch.nn.Module, args: tuple, kwargs: dict, everything: bool) -> Any:
    """Dim.AUTO on the dimensions asked (see the module's docstring), keyed by the forward's parameter names."""

    def spec(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0:
            return None
        asked = range(leaf.dim()) if everything or not leaf.is_floating_point() else range(1)
        return {d: Dim.AUTO for d in asked}

    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {name: pytree.tree_map(spec, value) for name, value in bound.items()}


def to_graph(model: torch.nn.Module, exported: Exported, args: tuple, kwargs: dict) -> Graph:
    """The Graph of an exported program: canonical op spellings, placeholders told apart.

    It rewrites the program's graph module in place (save the program first, if it is to be kept).
    Batch norm stays its own op here; `fold_batchnorm` merges it into the layer before it on a copy.
    """
    program = exported.program
    gm = _LazyGraphModule.from_graphmodule(program.graph_module)  # its code is generated if ever asked for:
    canonicalise(gm)  # lrpgraph runs its own module of the graph (`propagate/forward.py`), so rewrites here
    # and in the analysis cost no code generation
    _drop_state_updates(program)
    gm.recompile()
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    names = iter(leaf_names(model, args, kwargs))
    state = iter(exported.recorded_state or ())
    kinds, input_names, state_names, constants = {}, {}, {}, {}
    for node, spec in zip(placeholders, program.graph_signature.input_specs, strict=True):
        kind, target = _KINDS.get(spec.kind), spec.target
        if kind is None:
            raise TraceError(f"unsupported graph input kind {spec.kind} for '{node.name}'")
        recorded_constant = exported.recorded_state is not None and kind in (PARAMETER, BUFFER)
        if kind == INPUT:
            kind, target = next(state, (INPUT, None))
        elif recorded_constant:  # a tensor the recorded call made (torch.tensor(...) in forward), lifted
            kind = CONSTANT
        kinds[node] = kind
        if kind == INPUT:
            input_names[node] = next(names)
        elif kind in (PARAMETER, BUFFER):
            state_names[node] = target
        else:
            constants[node] = program.state_dict[target] if recorded_constant else program.constants[target]
    in_spec, out_spec = exported.recorded_specs or (program.call_spec.in_spec, program.call_spec.out_spec)
    return Graph(
        module=gm,
        kinds=kinds,
        input_names=input_names,
        state_names=state_names,
        constants=constants,
        in_spec=in_spec,
        out_spec=out_spec,
        output_names=output_names(out_spec),
        check=exported.check,
        static_reason=exported.static_reason,
        recorded=exported.recorded_state is not None,
        decomposed=dict(exported.decomposed),
    )


def _drop_state_updates(program: torch.export.ExportedProgram | LoadedProgram) -> None:
    """Keep only the model's own outputs: a forward that writes its buffers or weights (running statistics, RWKV's
    rescaling) has those writes as the graph's first outputs, which are not results to explain."""
    output = program.graph.output_node()
    values = list(output.args[0])
    specs = program.graph_signature.output_specs
    kept = [v for v, spec in zip(values, specs, strict=True) if spec.kind == OutputKind.USER_OUTPUT]
    if len(kept) != len(values):
        output.args = (tuple(kept),)


def _describe_failure(model: torch.nn.Module, error: BaseException) -> str:
    """A few lines: what failed, in which of the model's modules, at which source line, and what to try."""
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
    text += f"\n  hint: {_hint(error)}"
    return text


def _hint(error: BaseException) -> str:
    """What to try, by what kind of failure it was."""
    if "DataDependent" in type(error).__name__ or "data-dependent" in str(error):
        return "the model's Python code branches on tensor values (data-dependent control flow), which cannot be traced"
    return (
        "call the model the way its forward expects (a tensor, a tuple or a dict of keyword inputs); "
        "torch.export's own error is chained to this one"
    )
