"""The trace cache on disk: reused by a second process, rebuilt when stale or corrupt, never loaded unsafely."""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from models import mlp, tiny_llama, vgg_like

import lrpgraph
from lrpgraph.capture.disk_cache import DiskCache
from lrpgraph.capture.export import export_program
from lrpgraph.capture.serialise import versions
from lrpgraph.engine import tracers
from lrpgraph.engine.traced import shapes_vary
from lrpgraph.tools.cli import main as cli

HERE = Path(__file__).parent


@pytest.fixture
def exports(monkeypatch):
    calls = []
    original = tracers.export_program
    monkeypatch.setattr(tracers, "export_program", lambda *a: calls.append(1) or original(*a))
    return calls


def _explain(model, x, cache):
    lrpgraph.clear_cache(model)  # the memory cache would answer first
    return lrpgraph.explain(model, x, target=1, rules="epsilon-plus", cache_dir=cache).relevance["input"]


SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from models import vgg_like
    import lrpgraph
    from lrpgraph.engine import tracers
    calls = []
    original = tracers.export_program
    tracers.export_program = lambda *a: calls.append(1) or original(*a)
    torch.manual_seed(0)
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = lrpgraph.explain(model, x, target=1, rules="epsilon-plus", cache_dir={cache!r}).relevance["input"]
    print(len(calls), repr(r.sum().item()))
    """
)


def test_a_second_process_reuses_the_trace(tmp_path):
    script = SCRIPT.format(tests=str(HERE), cache=str(tmp_path / "cache"))
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    exports_first, total_first = first.stdout.split()
    exports_second, total_second = second.stdout.split()
    assert (exports_first, exports_second) == ("1", "0")  # traced once, then loaded
    assert total_first == total_second
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == "0o700"


def test_hit_and_misses_by_what_the_graph_depends_on(tmp_path, exports):
    cache = tmp_path / "cache"
    x = torch.randn(2, 6, dtype=torch.float64)
    torch.manual_seed(0)
    reference = _explain(mlp(), x, cache)
    torch.manual_seed(1)
    other_weights = mlp()
    reused = _explain(other_weights, x, cache)  # same make-up, other weights: the trace is reused,
    assert len(exports) == 1  # and the weights are read from the live model
    assert not torch.allclose(reused, reference)
    torch.testing.assert_close(
        reused, lrpgraph.explain(other_weights, x, target=1, rules="epsilon-plus").relevance["input"]
    )
    wider = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).double()
    _explain(wider, x, cache)  # another weight shape
    model = mlp()
    model[1] = torch.nn.LeakyReLU(0.2)  # another module, another setting
    _explain(model, x, cache)
    model[1].negative_slope = 0.3
    _explain(model, x, cache)
    assert len(exports) == 4


def _entry(cache: Path) -> Path:
    (path,) = cache.glob("*.pt2c")
    return path


def test_corrupt_truncated_and_stale_entries_are_rebuilt_with_a_warning(tmp_path, exports):
    cache = tmp_path / "cache"
    model, x = vgg_like(), torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = _explain(model, x, cache)
    entry = _entry(cache)
    damages = {
        "corrupt": lambda: entry.write_bytes(b"not a torch file"),
        "truncated": lambda: entry.write_bytes(entry.read_bytes()[:1000]),
        "stale": lambda: _rewrite_versions(entry),
    }
    for count, (name, damage) in enumerate(damages.items(), start=2):
        damage()
        with pytest.warns(UserWarning, match="stale entry" if name == "stale" else "unreadable entry"):
            torch.testing.assert_close(_explain(model, x, cache), expected)
        assert len(exports) == count  # traced again
        entry = _entry(cache)  # and rewritten: the next process gets a good one
        DiskCache(cache).load(entry)


def _rewrite_versions(entry: Path) -> None:
    payload = torch.load(entry, weights_only=True)
    payload["versions"] = {**versions(), "torch": "1.0.0"}
    torch.save(payload, entry)


def test_processes_started_together_trace_once_between_them(tmp_path):
    script = SCRIPT.format(tests=str(HERE), cache=str(tmp_path / "cache"))
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sorted(exports for exports, _ in outputs) == ["0", "1"]  # one traced, the other waited and loaded
    assert outputs[0][1] == outputs[1][1]
    assert len(list((tmp_path / "cache").glob("*.pt2c"))) == 1


def test_concurrent_writes_of_one_entry_leave_good_files(tmp_path):
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    cache = DiskCache(tmp_path / "cache")
    programs = [export_program(model, (x,), {}) for _ in range(4)]
    threads = [threading.Thread(target=cache.save, args=("key", p)) for p in programs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = cache.entries("key")
    assert entries and not list((tmp_path / "cache").glob(".tmp-*"))
    for entry in entries:
        cache.load(entry)


def test_an_entry_or_directory_others_can_write_is_refused(tmp_path):
    cache = tmp_path / "cache"
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    _explain(model, x, cache)
    entry = _entry(cache)
    entry.chmod(0o666)
    with pytest.raises(lrpgraph.LRPGraphError, match="can be written by other users"):
        _explain(model, x, cache)
    entry.chmod(0o600)
    cache.chmod(0o777)
    with pytest.raises(lrpgraph.LRPGraphError, match="can be written by other users"):
        _explain(model, x, cache)


def test_a_symbolic_expression_that_would_run_code_is_refused(tmp_path):
    from lrpgraph.capture.untrusted import Refused, parse_expression

    assert str(parse_expression("Le(Symbol('s0', integer=True), Integer(5))")) == "s0 <= 5"
    for text in ("__import__('os').system('true')", "Symbol('s0').__class__", "open('x')"):
        with pytest.raises(Refused, match="refusing"):
            parse_expression(text)


def test_cache_command_reports_and_clears(tmp_path, capsys):
    cache = tmp_path / "cache"
    _explain(mlp(), torch.randn(2, 6, dtype=torch.float64), cache)
    assert cli(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "1 cached trace(s)" in capsys.readouterr().out
    assert cli(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert not list(cache.glob("*.pt2c"))


def test_an_entry_reads_back_as_torchs_own_deserializer_builds_it():
    """The fast reader (one converter per schema type, each symbolic size parsed once) against torch's reader."""

    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    from lrpgraph.capture.call import prepare_call
    from lrpgraph.capture.program_json import deserialize
    from lrpgraph.capture.serialise import encode, state_and_constants
    from lrpgraph.capture.untrusted import PROGRAM_READER

    model = tiny_llama()
    ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    payload = encode(export_program(model, *prepare_call(model, {"input_ids": ids})))
    raw = json.loads(payload["program"])
    fast, reference = PROGRAM_READER(schema.ExportedProgram, raw), _dict_to_dataclass(schema.ExportedProgram, raw)
    assert fast == reference
    state, constants = state_and_constants(payload)
    ours = deserialize(fast, state, constants)
    theirs = ExportedProgramDeserializer().deserialize(reference, state, constants, None)
    assert ours.graph_module.code == theirs.graph_module.code
    assert ours.graph_signature == theirs.graph_signature and ours.call_spec == theirs.call_spec
    assert ours.constants.keys() == theirs.constants.keys() and ours.state_dict.keys() == theirs.state_dict.keys()
    described = 0
    for a, b in zip(ours.graph.nodes, theirs.graph.nodes, strict=True):
        assert a.name == b.name and a.meta.keys() == b.meta.keys()
        va, vb = a.meta.get("val"), b.meta.get("val")
        assert str(va) == str(vb)
        if isinstance(va, torch.Tensor):
            assert (va.shape, va.stride(), va.dtype, va.device) == (vb.shape, vb.stride(), vb.dtype, vb.device)
            described += any(isinstance(size, torch.SymInt) for size in va.shape)
    assert described > 50  # the sizes are symbolic, not specialised


def test_traces_and_recordings_carry_no_python_stacks_and_leave_torchs_flag_as_found():
    """Capturing and symbolising the Python stack of every node costs a tenth of a first explain and nothing reads
    it: export and the recorder trace without it, and put torch's flag back."""
    from torch.fx import config as fx_config

    from lrpgraph.capture.call import prepare_call
    from lrpgraph.capture.record import record_program

    model = tiny_llama()
    ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    for trace in (export_program, record_program):
        program = trace(model, *prepare_call(model, {"input_ids": ids}), lambda node: False).program
        stacks = [node.meta.get("stack_trace") or "" for node in program.graph.nodes]
        assert not any("models.py" in stack or "modeling_" in stack for stack in stacks), trace.__name__
        assert [node.meta.get("nn_module_stack") is not None for node in program.graph.nodes].count(True) > 50
        assert fx_config.do_not_emit_stack_traces is False


def test_an_entry_is_torchs_serialisation_without_its_discarded_canonical_form_check(monkeypatch):
    """torch's serializer canonicalises a deep copy of every program only to test that it can, and throws the copy
    away (0.4 s of a cold first explain): encode skips that test, writes the very text torch writes with it, and
    puts the check back."""
    from torch._export.serde import serialize as torch_serde

    from lrpgraph.capture.call import prepare_call
    from lrpgraph.capture.serialise import encode

    calls = []

    def check(program, constants=None):
        calls.append(program)
        return program

    monkeypatch.setattr(torch_serde, "canonicalize", check)
    model = tiny_llama()
    ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    exported = export_program(model, *prepare_call(model, {"input_ids": ids}))
    payload = encode(exported)
    assert calls == [] and torch_serde.canonicalize is check
    flags = {"serialize_state_dict": False, "serialize_constants": False, "serialize_example_inputs": False}
    theirs = torch_serde.serialize(exported.program, **flags)
    assert len(calls) == 1
    assert payload["program"] == theirs.exported_program.decode("utf-8")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.replace("Symbol('s", "__import__('os').system('true') or Symbol('s", 1), "refusing"),
        (lambda text: text.replace('"torch.ops.aten.', '"torch.ops.aten.nowhere_', 1), "operator not registered"),
        (
            lambda text: re.sub(
                r'"target": "torch\.ops\.aten\.[a-z_.]+"', '"target": "torch.os.system"', text, count=1
            ),
            "not one a trace calls",
        ),
    ],
)
def test_an_entry_naming_code_to_run_or_an_unknown_operator_is_refused(tmp_path, damage, message):
    cache = tmp_path / "cache"
    model, x = mlp(), torch.randn(2, 6, dtype=torch.float64)
    with shapes_vary():
        expected = _explain(model, x, cache)
    entry = _entry(cache)
    payload = torch.load(entry, weights_only=True)
    damaged = damage(payload["program"])
    assert damaged != payload["program"]  # the mlp's trace has symbolic batch sizes and aten ops to damage
    payload["program"] = damaged
    torch.save(payload, entry)
    with pytest.warns(UserWarning, match=message), shapes_vary():
        torch.testing.assert_close(_explain(model, x, cache), expected)


def test_pytree_specs_that_would_import_are_refused_however_their_json_is_spelled():
    """torch reads a spec's context with an object hook importing `{"__enum__": …, "fqn": "module:name"}`, and a
    defaultdict's with a function importing its factory's module: an entry may name neither."""
    from lrpgraph.capture.untrusted import Refused, allowed_operator, check_spec

    def spec(kind, context):
        return json.dumps([1, {"type": kind, "context": context, "children_spec": []}])

    check_spec(spec("builtins.dict", json.dumps(["logits", "loss"])))  # what a real output spec holds
    hidden = '[{"\\u005f_enum__": true, "fqn": "os:environ", "name": "PATH"}]'  # __enum__, spelled with an escape
    assert "__enum__" not in hidden and json.loads(hidden)[0]["__enum__"] is True
    for bad in (spec("builtins.dict", hidden), spec("collections.defaultdict", "{}"), spec("no.such.Type", None)):
        with pytest.raises(Refused):
            check_spec(bad)
    assert allowed_operator("torch.ops.aten.mm.default") and allowed_operator("_operator.mul")
    for target in ("torch.os.system", "builtins.eval", "#custom", "torch.ops.aten.nowhere.default", "os.system"):
        assert not allowed_operator(target)
