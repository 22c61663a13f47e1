"""An exported program as a trace-cache entry's payload, and back: plain data that loads without pickle.

The payload holds only strings, numbers, lists, dicts and the program's lifted constant tensors, so it
loads with `torch.load(weights_only=True)`; the program is torch.export's own JSON serialisation, read back
with its deserializer (`program_json.py`) after every string that would reach `eval` or an import has been
checked (`untrusted.py`). Parameters and buffers are kept as names, shapes and dtypes only and come back as
data-free meta tensors: a cached graph always reads the live model's weights.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

import torch
from torch._export.serde import schema
from torch._export.serde import serialize as torch_serde
from torch.export.graph_signature import InputKind

from .export import Exported
from .guards import GuardSpec
from .program_json import LoadedProgram, deserialize
from .untrusted import PROGRAM_READER, Refused, parse_expression

FORMAT = 1


class Uncacheable(Exception):
    """Why a program cannot be written to, or read from, the disk cache."""


def versions() -> dict[str, str]:
    """What a cached program depends on besides the model: torch, transformers and lrpgraph versions, format."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "none"

    return {"torch": str(torch.__version__), "transformers": version("transformers"), "lrpgraph": version("lrpgraph"),
            "format": str(FORMAT)}  # fmt: skip


def encode(exported: Exported) -> dict:
    """The program as plain data (strings, numbers, lists, dicts, constant tensors), which `torch.load` reads back
    with weights_only=True; Uncacheable when a constant is not a plain tensor or torch cannot serialise it."""
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
        with _no_canonical_form_check():
            artifact = torch_serde.serialize(
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
        "decomposed": dict(exported.decomposed),
    }


_CHECK_LOCK = threading.Lock()


@contextmanager
def _no_canonical_form_check() -> Iterator[None]:
    """torch's serializer canonicalises a deep copy of every program only to test that a canonical form exists, and
    discards it: a quarter of a first explain (0.4 s of 1.8 s, an 8-layer Llama at 128 tokens). Skipped while this
    encodes (the entry is checked as it is read back); restored after, one encode at a time."""
    with _CHECK_LOCK:
        check = getattr(torch_serde, "canonicalize", None)
        if check is not None:
            torch_serde.canonicalize = _canonical_as_is
        try:
            yield
        finally:
            if check is not None:
                torch_serde.canonicalize = check


def _canonical_as_is(program: schema.ExportedProgram, constants: set[str] | None = None) -> schema.ExportedProgram:
    return program


def decode(payload: dict) -> Exported:
    """The program `encode` wrote, every string that would be evaluated or imported checked first (`untrusted.py`);
    Uncacheable when it names something refused."""
    try:
        raw = json.loads(payload["program"])
        program = deserialize(PROGRAM_READER(schema.ExportedProgram, raw), *state_and_constants(payload))
        guards = GuardSpec.from_json(json.loads(payload["guards"]), parse_expression)
    except Refused as refusal:
        raise Uncacheable(str(refusal)) from None
    _drop_unused_outputs(program)
    return Exported(program, guards, payload["static_reason"] or None, decomposed=dict(payload.get("decomposed") or {}))


def state_and_constants(payload: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype):
        raise Uncacheable(f"unknown dtype {name!r}")
    return value
