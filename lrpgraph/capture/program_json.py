"""torch.export's JSON program read back fast: what the trace cache spends a new process's first call on.

torch's reader resolves the schema's type hints afresh for every one of some 40,000 JSON objects and
parses the sympy text of every tensor dimension (1,767 parses of 10 distinct expressions for an 8-layer
Llama): 1.5 s of a 1.8 s first call. Here each schema type gets a converter built once, and each distinct
symbolic size is parsed once and shared; the graph is otherwise built by torch's own deserializer, so
it is the one torch would return (without wrapping it in an ExportedProgram: `LoadedProgram`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple

import torch
import torch.export.exported_program as ep
import torch.utils._pytree as pytree
from torch._export.serde import schema
from torch._export.serde import serialize as serde
from torch._export.serde.union import _Union
from torch._guards import SLoc
from torch.fx.experimental import symbolic_shapes
from torch.utils._sympy.numbers import int_oo


class SchemaReader:
    """JSON to torch.export's schema dataclasses, as torch's `_dict_to_dataclass` builds them, with a converter
    built once per schema type; `checks[T]` runs on every T as it is built (to refuse what would be evaluated)."""

    def __init__(self, checks: Mapping[type, Callable[[Any], None]]):
        self.checks = dict(checks)
        self._converters: dict[Any, Callable[[Any], Any]] = {}
        self._made: dict[tuple, Any] = {}

    def __call__(self, cls: Any, data: Any) -> Any:
        self._made = {}  # unions built in this program (it repeats few sizes thousands of times)
        try:
            return self.converter(cls)(data)
        finally:
            self._made = {}

    def converter(self, cls: Any) -> Callable[[Any], Any]:
        if cls not in self._converters:
            self._converters[cls] = self._build(cls)
        return self._converters[cls]

    def _build(self, cls: Any) -> Callable[[Any], Any]:
        if isinstance(cls, typing.ForwardRef):
            return self.converter(cls.__forward_arg__)
        if isinstance(cls, str):
            return self.converter(getattr(schema, cls))
        origin, args = typing.get_origin(cls), typing.get_args(cls)
        if origin is Annotated:
            return self.converter(cls.__origin__)
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            inner = self.converter(args[0])
            return lambda data: None if data is None else inner(data)
        check = self.checks.get(cls, lambda made: None)
        if isinstance(cls, type) and issubclass(cls, _Union):
            hints = typing.get_type_hints(cls, globalns=vars(schema))

            def union(data: dict) -> Any:
                key = (cls, repr(data))
                if key not in self._made:
                    ((tag, value),) = data.items()
                    made = cls.create(**{tag: self.converter(hints[tag])(value)})
                    check(made)
                    self._made[key] = made
                return self._made[key]

            return union
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls, globalns=vars(schema))
            fields = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]

            def record(data: dict) -> Any:
                made = cls(**{name: self.converter(hint)(data[name]) for name, hint in fields if name in data})
                check(made)
                return made

            return record

        def plain(data: Any) -> Any:
            if isinstance(data, list):
                if not data:
                    return data
                item = self.converter(args[0])
                return [item(d) for d in data]
            if isinstance(data, dict):
                value = self.converter(args[1])
                return {k: value(v) for k, v in data.items()}
            return float(data) if cls is float else data

        return plain


def deserialize(
    program: schema.ExportedProgram, state_dict: dict[str, torch.Tensor], constants: dict[str, Any]
) -> LoadedProgram:
    """What `ExportedProgramDeserializer().deserialize(program, state_dict, constants)` reads, each size parsed once."""
    version = program.schema_version
    if version.major != serde.SCHEMA_VERSION[0] and (version.major, version.minor) != (0, 0):
        raise serde.SerializeError(f"schema version {version.major}.{version.minor}, not {serde.SCHEMA_VERSION}")
    ranges = {
        name: symbolic_shapes.ValueRanges(
            serde._int_to_sympy_int(r.min_val, -int_oo), serde._int_to_sympy_int(r.max_val, int_oo)
        )
        for name, r in program.range_constraints.items()
    }
    reader = serde.GraphModuleDeserializer()
    parse = reader._parse_sym_expr

    def parse_once(expression: Any, hint: Any = None) -> Any:
        _ranges_from_the_cache(reader.shape_env)
        return parse(expression, hint)

    reader._parse_sym_expr = functools.cache(parse_once)  # its side effects are the same each time
    reader.deserialize_sym_int = _once_per(_sym_int_key, reader.deserialize_sym_int)
    reader.deserialize_tensor_meta = _once_per(_tensor_meta_key, reader.deserialize_tensor_meta)
    result = reader.deserialize(program.graph_module, state_dict, constants, None, ranges)
    calls = result.module_call_graph
    top = calls[0].signature if calls and calls[0].fqn == "" and calls[0].signature is not None else None
    return LoadedProgram(
        graph_module=result.graph_module,
        graph_signature=result.signature,
        constants=result.constants,
        state_dict=result.state_dict,
        call_spec=CallSpec(top.in_spec if top else None, top.out_spec if top else None),
    )


class CallSpec(NamedTuple):
    in_spec: pytree.TreeSpec | None
    out_spec: pytree.TreeSpec | None


@dataclasses.dataclass
class LoadedProgram:
    """The parts of an ExportedProgram lrpgraph reads (`capture/export.py: to_graph`). Building an ExportedProgram
    would generate the graph's code a second time and verify a program that was verified when it was exported."""

    graph_module: torch.fx.GraphModule
    graph_signature: ep.ExportGraphSignature
    constants: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    call_spec: CallSpec

    @property
    def graph(self) -> torch.fx.Graph:
        return self.graph_module.graph


def _ranges_from_the_cache(shape_env: symbolic_shapes.ShapeEnv) -> None:
    """Record the program's symbol ranges with "lrpgraph trace cache" as their source: ShapeEnv would look up the
    calling user frame for each, which first imports inductor, dynamo and torch.export's tracer (0.1 s)."""
    if "constrain_symbol_range" in vars(shape_env):
        return
    source = SLoc("lrpgraph trace cache", None)

    def constrain_symbol_range(symbol: Any, compiler_min: Any, compiler_max: Any) -> None:
        bounds = symbolic_shapes.ValueRanges(compiler_min, compiler_max)
        shape_env._update_var_to_range(symbol, bounds, symbolic_shapes.ValueRangesSLoc(source, source))

    shape_env.constrain_symbol_range = constrain_symbol_range


def _once_per(key: Callable[[Any], Any], method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`method`, called once per distinct `key(value)` and its result shared (a key of None: called every time)."""
    made: dict[Any, Any] = {}

    def shared(value: Any) -> Any:
        k = key(value)
        if k is None:
            return method(value)
        if k not in made:
            made[k] = method(value)
        return made[k]

    return shared


def _sym_int_key(s: schema.SymInt) -> tuple | None:
    if s.type != "as_expr":
        return None
    return s.value.expr_str, None if s.value.hint is None else s.value.hint.value


def _tensor_meta_key(meta: schema.TensorMeta) -> tuple:
    return (_sizes(meta.sizes), _sizes(meta.strides), meta.dtype, meta.device.type, meta.device.index,
            meta.requires_grad)  # fmt: skip


def _sizes(values: list[schema.SymInt]) -> tuple:
    return tuple(v.value.expr_str if v.type == "as_expr" else v.value for v in values)
