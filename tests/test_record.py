"""The fallback tracer: models torch.export cannot trace are explained from a recording of the call that ran.

A recording is checked against a static trace of the same computation where both work (the branch a
data-dependent model took, written out without the branch), across inputs that take different branches.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from guard import assert_unchanged, snapshot
from torch import nn

import lrpgraph
from lrpgraph.tools.zoo import architectures


class Branchy(nn.Module):
    """Which layer runs depends on the input's values: `if x.sum() > 0` cannot be exported."""

    def __init__(self, branch: str | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c, self.out = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.branch = branch  # a fixed branch: the same computation written without the test

    def forward(self, x):
        h = torch.relu(self.a(x))
        taken = self.branch or ("b" if x.sum() > 0 else "c")
        h = torch.relu(self.b(h) if taken == "b" else 2 * self.c(h))
        return self.out(h)


class Experts(nn.Module):
    """Mixture of experts as HuggingFace writes it: a loop over the experts that received tokens."""

    def __init__(self, loop: bool = True):
        super().__init__()
        torch.manual_seed(1)
        self.router, self.experts = nn.Linear(6, 3, bias=False), nn.ModuleList(nn.Linear(6, 6) for _ in range(3))
        self.head, self.loop = nn.Linear(6, 2), loop

    def forward(self, x):
        weights = torch.softmax(self.router(x), -1)
        gate, choice = weights.max(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            if self.loop:
                rows = (choice == e).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                out = out.index_add(0, rows, gate[rows, None] * expert(x[rows]))
            else:  # the same sum, every expert applied to every row and masked
                out = out + (choice == e)[:, None] * gate[:, None] * expert(x)
        return self.head(out)


def _explain(model: nn.Module, x: torch.Tensor, **options) -> torch.Tensor:
    return lrpgraph.explain(model.double().eval(), x.double(), target=1, rules="epsilon", **options).relevance["x"]


def test_each_branch_equals_a_static_trace_of_it():
    model = Branchy()
    x_b = torch.tensor([[1.0, 2.0, -0.5, 0.3], [0.4, 0.1, 0.9, -0.2]])
    x_c = -x_b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recorded = [_explain(model, x) for x in (x_b, x_c, x_b)]
    said = [w for w in caught if "recording" in str(w.message)]
    assert len(said) == 1 and "Branchy" in str(said[0].message)
    for branch, got in zip("bcb", recorded, strict=True):
        fixed = Branchy(branch)
        fixed.load_state_dict(model.state_dict())
        expected = _explain(fixed, x_b if branch == "b" else x_c, tracer="export")
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(recorded[0], -recorded[1])  # the two branches really differ


def test_a_loop_over_the_experts_that_received_tokens():
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    looped, dense = Experts(loop=True), Experts(loop=False)
    dense.load_state_dict(looped.state_dict())
    with pytest.raises(lrpgraph.TraceError):
        _explain(looped, x, tracer="export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _explain(looped, x)
    torch.testing.assert_close(got, _explain(dense, x, tracer="export"), rtol=1e-9, atol=1e-12)
    assert got.abs().sum() > 0


def test_a_recording_equals_the_export_of_a_transformer():
    (arch,) = architectures(["llama"])
    model, inputs = arch.build()
    exported = lrpgraph.explain(model, inputs, rules="attnlrp", tracer="export")
    recorded = lrpgraph.explain(model, inputs, rules="attnlrp", tracer="record")
    for name, value in exported.relevance.items():
        torch.testing.assert_close(recorded.relevance[name], value, rtol=1e-5, atol=1e-7)
    assert not recorded.fallbacks and not exported.fallbacks


def test_recording_leaves_the_model_as_it_was():
    model = Branchy().train()
    model.a.weight.grad = torch.ones_like(model.a.weight)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lrpgraph.explain(model, torch.randn(2, 4), target=0)
    with pytest.raises(lrpgraph.InputError, match="tracer"):
        lrpgraph.explain(model, torch.randn(2, 4), target=0, tracer="fx")
    assert_unchanged(before, model)


class Grouped(nn.Module):
    """Rows picked by a routing mask (x[mask]: as many rows as the mask selects): torch.export traces it, with
    shapes that depend on values; with `masked=True` the same sum written with multiplied masks."""

    def __init__(self, masked: bool = False):
        super().__init__()
        torch.manual_seed(2)
        self.router, self.experts = nn.Linear(6, 2), nn.ModuleList(nn.Linear(6, 6) for _ in range(2))
        self.head, self.masked = nn.Linear(6, 2), masked

    def forward(self, x):
        choice = self.router(x).argmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            mask = choice == e
            out = out + mask[:, None] * expert(x) if self.masked else out.index_put((mask,), expert(x[mask]))
        return self.head(out)


def test_shapes_that_depend_on_values_are_recorded():
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(4))
    grouped, masked = Grouped(), Grouped(masked=True)
    masked.load_state_dict(grouped.state_dict())
    with pytest.raises(lrpgraph.TraceError, match="depend on tensor values"):
        _explain(grouped, x, tracer="export")
    exact = lrpgraph.preset("epsilon", epsilon=1e-12, stabilizer=1e-12)  # the two forms' sums differ by zeros
    with pytest.warns(UserWarning, match="recording"):
        got = lrpgraph.explain(grouped.double().eval(), x.double(), target=1, rules=exact).relevance["x"]
    expected = lrpgraph.explain(masked.double().eval(), x.double(), target=1, rules=exact, tracer="export")
    torch.testing.assert_close(got, expected.relevance["x"], rtol=1e-6, atol=1e-9)


class OffsetMatches(nn.Module):
    """The positions of the positive scores, offset in place to the next row (LightGlue writes its matches' indices
    so): an index set the recording holds constant, then writes into."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.score = nn.Linear(4, 1)

    def forward(self, x):
        where = torch.nonzero(self.score(x)[:-1, 0] > 0)[:, 0]
        where += 1
        return x[where].sum(0, keepdim=True)


def test_an_index_set_the_model_writes_into_is_recorded():
    """Relevance goes to the rows after the positive scores, each row all of its own (a sum of rows)."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    model = OffsetMatches().double().eval()
    with pytest.warns(UserWarning, match="recording"):
        ex = lrpgraph.explain(model, x, target=2, rules=lrpgraph.preset("epsilon", stabilizer=1e-12))
    rows = torch.nonzero(model.score(x)[:-1, 0] > 0)[:, 0] + 1
    expected = torch.zeros_like(x)
    expected[rows, 2] = x[rows, 2]
    torch.testing.assert_close(ex.relevance["x"], expected.detach(), rtol=1e-9, atol=1e-12)


class Durations(nn.Module):
    """A length regulator (FastSpeech): each position repeated as often as a duration the model predicts from it;
    with `given`, the positions to read held in a buffer instead (an index_select, which export traces)."""

    def __init__(self, given=None):
        super().__init__()
        torch.manual_seed(5)
        self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
        self.register_buffer("given", given)

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        if self.given is not None:
            return self.out(h.index_select(1, self.given)).sum(1)
        durations = (3 * h[0, :, 0]).abs().round().long() + 1
        return self.out(h.repeat_interleave(durations, dim=1)).sum(1)


def test_repeats_the_model_computes_are_held_for_the_recorded_call():
    model, x = Durations().double(), torch.randn(1, 5, 4, dtype=torch.float64)
    durations = (3 * torch.tanh(model.lin(x))[0, :, 0]).abs().round().long() + 1
    assert len(set(durations.tolist())) > 1  # the call's own counts, not one for all
    with pytest.warns(UserWarning, match="recording"):
        got = lrpgraph.explain(model, x, target=1).relevance["x"]
    positions = torch.arange(5).repeat_interleave(durations)
    expected = lrpgraph.explain(Durations(positions).double(), x, target=1, tracer="export").relevance["x"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    assert lrpgraph.verify(model, x, target=1).ok


class Writes(nn.Module):
    """Branches on values and writes into its weight, a buffer and its input in place while it runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        self.lin.weight.mul_(0.5)
        x.mul_(2)
        h = torch.relu(self.lin(x))
        rows = (h.sum(-1) > self.calls - 1).nonzero().squeeze(-1)
        return self.out(torch.zeros_like(h).index_add(0, rows, h[rows]))


def test_recording_writes_nothing_and_explains_the_call_as_it_would_run():
    model = Writes().double().eval()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    before, given = snapshot(model), x.clone()
    with torch.no_grad():
        expected = copy.deepcopy(model)(x.clone())  # what the call computes, on a copy of everything it writes
    with pytest.warns(UserWarning, match="recording"):
        ex = lrpgraph.explain(model, x, target=1)
    assert_unchanged(before, model)
    assert torch.equal(x, given)
    torch.testing.assert_close(ex.output, expected.detach())


class UniqueIds(nn.Module):
    """An embedding of the distinct ids, gathered back: the index set is the ids themselves."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(20, 4), nn.Linear(4, 2)

    def forward(self, ids):
        distinct, inverse = torch.unique(ids, return_inverse=True)
        return self.head(self.embed(distinct)[inverse].mean(1))


def test_an_index_set_made_of_the_inputs_is_an_error_not_a_silent_zero():
    with pytest.warns(UserWarning, match="recording"), pytest.raises(lrpgraph.MissingRuleError, match="reaches none"):
        lrpgraph.explain(UniqueIds().eval(), torch.tensor([[1, 5, 5, 7]]), target=0)


class PatchGrid(nn.Module):
    """Patches with an integer grid that sets how many rows each image has (as vision-language towers take it), and
    a branch on it that export cannot trace."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.lin, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, patches, grid):
        rows = torch.repeat_interleave(torch.arange(grid.shape[0]), grid.prod(-1))
        if grid.sum() > 100:
            patches = patches.flip(0)
        pooled = torch.zeros(grid.shape[0], 4, dtype=patches.dtype).index_add(0, rows, self.lin(patches))
        return self.head(pooled)


def test_an_integer_input_that_sets_sizes_is_held_for_the_recorded_call():
    model, patches = PatchGrid().double(), torch.randn(10, 4, dtype=torch.float64)
    grid = torch.tensor([[1, 2, 3], [1, 2, 2]])
    with pytest.warns(UserWarning, match="recording"):
        ex = lrpgraph.explain(model, (patches, grid), target=1)
    assert list(ex.relevance) == ["patches"] and ex.unreached == {}  # a grid is read as a mask is: not explained
    rows = torch.tensor([0] * 6 + [1] * 4)
    expected = lrpgraph.explain(Pooled(model, rows), patches, target=1, tracer="export").relevance["patches"]
    torch.testing.assert_close(ex.relevance["patches"], expected, rtol=1e-12, atol=1e-14)


class Pooled(nn.Module):
    """PatchGrid with the rows each patch pools into given as a constant."""

    def __init__(self, grid_model: PatchGrid, rows: torch.Tensor):
        super().__init__()
        self.inner = grid_model
        self.register_buffer("rows", rows)

    def forward(self, patches):
        pooled = torch.zeros(2, 4, dtype=patches.dtype).index_add(0, self.rows, self.inner.lin(patches))
        return self.inner.head(pooled)


def test_a_model_export_cannot_trace_is_remembered_on_disk(tmp_path, monkeypatch):
    """Later processes sharing the cache record at once instead of failing the export again (under the lock)."""
    import json

    from lrpgraph.engine import tracers

    calls = []
    original = tracers.export_program
    monkeypatch.setattr(tracers, "export_program", lambda *a: calls.append(1) or original(*a))
    model, x = Branchy(), torch.randn(3, 4)
    expected = _explain(Branchy("b" if x.double().sum() > 0 else "c"), x)
    calls.clear()
    with pytest.warns(UserWarning, match="recording"):
        torch.testing.assert_close(_explain(model, x, cache_dir=tmp_path), expected)
    (marker,) = tmp_path.glob("*.unexportable.json")
    assert len(calls) == 1 and oct(marker.stat().st_mode & 0o777) == "0o600"
    lrpgraph.clear_cache(model)  # as a new process would start
    with pytest.warns(UserWarning, match="could not trace it"):
        torch.testing.assert_close(_explain(model, x, cache_dir=tmp_path), expected)
    assert len(calls) == 1  # not exported again
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "versions": {"torch": "1.0"}}))
    lrpgraph.clear_cache(model)
    with pytest.warns(UserWarning, match="recording"):
        _explain(model, x, cache_dir=tmp_path)
    assert len(calls) == 2  # a marker another version wrote is not trusted
    from lrpgraph.tools.cli import main as cli

    assert cli(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert not list(tmp_path.glob("*.unexportable.json"))


def test_an_export_failing_for_want_of_memory_is_not_remembered(tmp_path, monkeypatch):
    from lrpgraph.engine import tracers
    from lrpgraph.errors import TraceError

    def out_of_memory(*args):
        try:
            raise MemoryError("no room")
        except MemoryError as error:
            raise TraceError("could not trace it: MemoryError") from error

    monkeypatch.setattr(tracers, "export_program", out_of_memory)
    model, x = Branchy(), torch.randn(3, 4)
    with pytest.warns(UserWarning, match="recording"):
        _explain(model, x, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.unexportable.json"))  # the next process tries export again


class CastAndFloor(nn.Module):
    """A data-dependent branch (recorded) and an offset that is the floor of a float made from an integer input:
    floor's decomposition (prims.floor) has no rule either."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x, n):
        h = self.a(x) + torch.floor(n.to(x.dtype) * 1.5)
        h = h * 2 if x.sum() > 0 else h
        return self.out(h)


def test_a_recording_re_traces_only_for_decompositions_that_can_help(monkeypatch):
    retraces = []
    original = torch.export.ExportedProgram.run_decompositions

    def counting(self, *args, **kwargs):
        retraces.append(sorted(str(op) for op in (args[0] if args else kwargs.get("decomp_table") or {})))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", counting)
    model = CastAndFloor().double().eval()
    inputs = {"x": torch.randn(1, 4, dtype=torch.float64), "n": torch.tensor([[3]])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = lrpgraph.explain(model, inputs, target=0)
        assert first.stats["tracer"] == "recorded"
        tried = len(retraces)
        lrpgraph.explain(model, inputs, target=0)
    assert len(retraces) == tried  # floor's dead end is not tried again at the next call's recording
