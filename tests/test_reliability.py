"""Reliability: first calls from several threads at once, and a trace cache that is never stale."""

import copy
import threading
import warnings

import pytest
import torch
from guard import assert_unchanged, snapshot
from models import mlp, vgg_like
from torch import nn

import lrpgraph
from lrpgraph.engine import tracers
from lrpgraph.engine.model_traces import traces_of


class Scaled(nn.Module):
    """Values baked into a trace: a plain attribute, a module's slope and eps, an unregistered tensor."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.LeakyReLU(0.1)
        self.norm = nn.LayerNorm(4, eps=1e-5)
        self.head = nn.Linear(4, 2)
        self.scale = 2.0
        self.offset = torch.tensor([0.5, -1.0, 0.25, 2.0], dtype=torch.float64)

    def forward(self, x):
        h = self.norm(self.act(self.lin(x)) * self.scale + self.offset)
        return self.head(h)


def _fresh_relevance(model, x):
    """What a model in this state explains to, traced from scratch."""
    return lrpgraph.explain(copy.deepcopy(model), x, target=1, rules="epsilon").relevance["x"]


EDITS = {
    "negative slope": lambda m: setattr(m.act, "negative_slope", 0.7),
    "layer norm eps": lambda m: setattr(m.norm, "eps", 0.5),
    "plain attribute": lambda m: setattr(m, "scale", -3.0),
    "tensor attribute replaced": lambda m: setattr(m, "offset", torch.full((4,), 3.0, dtype=torch.float64)),
    "tensor attribute edited in place": lambda m: m.offset.mul_(-4.0),
    "submodule replaced": lambda m: setattr(m, "act", nn.Tanh()),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_changed_value_the_graph_depends_on_is_never_served_stale(edit):
    torch.manual_seed(0)
    model = Scaled().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    before = lrpgraph.explain(model, x, target=1, rules="epsilon").relevance["x"]
    EDITS[edit](model)
    after = lrpgraph.explain(model, x, target=1, rules="epsilon").relevance["x"]
    expected = _fresh_relevance(model, x)
    torch.testing.assert_close(after, expected)
    assert not torch.allclose(before, after)


def test_a_submodule_replaced_by_an_object_that_reuses_its_id_is_traced_again():
    torch.manual_seed(0)
    model = Scaled().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    lrpgraph.explain(model, x, target=1)
    for _ in range(1000):  # a new object at the old one's address: `id` would call it the same module
        old = id(model.act)
        model.act = None
        replacement = nn.Tanh()
        if id(replacement) == old:
            break
        model.act = nn.LeakyReLU(0.1)
    else:
        pytest.skip("the allocator never reused the address")
    model.act = replacement
    after = lrpgraph.explain(model, x, target=1).relevance["x"]
    torch.testing.assert_close(after, _fresh_relevance(model, x))


def test_an_attribute_that_cannot_be_fingerprinted_means_tracing_every_call(monkeypatch):
    model = mlp()
    model[0].opaque = object()  # no state to read: any value could hide behind it
    x = torch.randn(2, 6, dtype=torch.float64)
    calls = []
    original = tracers.export_program
    monkeypatch.setattr(tracers, "export_program", lambda *a: calls.append(1) or original(*a))
    with pytest.warns(UserWarning, match=r"never cached.*0\.opaque"):
        lrpgraph.explain(model, x, target=0)
    lrpgraph.explain(model, x, target=0)
    assert len(calls) == 2


def _models():
    torch.manual_seed(0)
    return [mlp(), vgg_like(), Scaled().double().eval()]


def _inputs(i):
    generator = torch.Generator().manual_seed(i)
    shapes = [(2, 6), (2, 3, 16, 16), (3, 4)]
    return torch.randn(*shapes[i], dtype=torch.float64, generator=generator)


def _first_calls_at_once(models: list, jobs: list[int], cache_dir=None) -> tuple[list, list]:
    """Every job's explain started at the same moment, one thread each: (relevance per job, errors)."""
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def run(slot, which):
        barrier.wait()
        try:
            results[slot] = lrpgraph.explain(models[which], _inputs(which), target=1, cache_dir=cache_dir).relevance
        except Exception as error:  # collected: the caller's assertion shows it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(slot, which)) for slot, which in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _first_calls_match(models: list[nn.Module], jobs: list[int], expected: list[dict], **options) -> None:
    """The threads' first calls at once: none fails, each equals its model's relevance, every model is intact."""
    before = [snapshot(m) for m in models]
    results, errors = _first_calls_at_once(models, jobs, **options)
    assert not errors, errors
    for slot, which in enumerate(jobs):
        for name, r in results[slot].items():
            torch.testing.assert_close(r, expected[which][name])
    for model, state in zip(models, before, strict=True):
        assert_unchanged(state, model)


def test_first_calls_from_four_threads_share_one_trace_and_leave_the_models_intact():
    expected = [lrpgraph.explain(m, _inputs(i), target=1).relevance for i, m in enumerate(_models())]
    jobs = [0, 1, 2, 1]  # two threads on one model
    for _ in range(20):
        models = _models()  # a cold cache every round
        _first_calls_match(models, jobs, expected)
        for model in models:
            model.state_dict()
            copy.deepcopy(model)
        assert len(traces_of(models[1]).by_structure) == 1  # the shared model was traced once


def test_first_calls_from_four_threads_reading_the_disk_cache_at_once(tmp_path):
    """Threads of a new process whose traces are all on disk load them at the same time (torch's program reader
    is one per process): every entry stays valid and every model intact."""
    expected = [lrpgraph.explain(m, _inputs(i), target=1, cache_dir=tmp_path).relevance for i, m in
                enumerate(_models())]  # fmt: skip
    entries = sorted(tmp_path.glob("*.pt2c"))
    jobs = [0, 1, 2, 1]
    for _ in range(5):
        models = _models()  # nothing in memory: each first call reads its entry
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an entry reported unreadable (and deleted) would warn
            _first_calls_match(models, jobs, expected, cache_dir=tmp_path)
        assert sorted(tmp_path.glob("*.pt2c")) == entries  # read, not traced again


def test_a_failing_export_restores_the_model():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            h = self.lin(x)
            if h.sum() > 0:  # data-dependent control flow
                return h
            return -h

    model = Broken().double()
    before = snapshot(model)
    with pytest.raises(lrpgraph.TraceError, match="data-dependent"):
        lrpgraph.explain(model, torch.randn(2, 3, dtype=torch.float64), target=0, tracer="export")
    assert_unchanged(before, model)
    copy.deepcopy(model)
    with pytest.warns(UserWarning, match="recording"):  # the default tracer records such a model instead
        lrpgraph.explain(model, torch.randn(2, 3, dtype=torch.float64), target=0)
    assert_unchanged(before, model)
    copy.deepcopy(model)


class Tracking(nn.Module):
    """A forward that also writes a float buffer (a running mean): the write is not an output to explain."""

    def __init__(self, track: bool):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.track = nn.Linear(4, 3).double(), track
        self.register_buffer("running", torch.zeros(4, dtype=torch.float64))

    def forward(self, x):
        if self.track:
            self.running.mul_(0.9).add_(0.1 * x.mean(0))
        return self.lin(x)


def test_buffer_writes_in_forward_are_not_outputs_and_are_not_applied():
    x = torch.randn(2, 4, dtype=torch.float64)
    tracking = Tracking(track=True)
    before = snapshot(tracking)
    ex = lrpgraph.explain(tracking, x, target=1)
    torch.testing.assert_close(ex.output, tracking.lin(x).detach())
    torch.testing.assert_close(ex.relevance["x"], lrpgraph.explain(Tracking(track=False), x, target=1).relevance["x"])
    assert_unchanged(before, tracking)
