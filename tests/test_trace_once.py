"""A first call is traced for its shapes (a static export: half the time); the first call that trace does not serve
makes one dynamic trace for every batch size and length, equal to fresh static traces."""

import copy
import warnings

import pytest
import torch
import transformers
from models import tiny_llama, vgg_like
from torch import nn

import lrpgraph
from lrpgraph.engine import tracers
from lrpgraph.engine.traced import shapes_vary


@pytest.fixture
def exports(monkeypatch):
    """Counts torch.export runs; `exports.static(...)` explains through a fresh static trace instead."""
    original = tracers.export_program
    counted = []

    def counting(model, args, kwargs, dimensions="batch-and-ids", unruled=None):
        counted.append(dimensions)
        return original(model, args, kwargs, dimensions, unruled)

    def static(model, inputs, **kwargs):
        twin = copy.deepcopy(model)  # its own cache: the model's traces stay
        monkeypatch.setattr(tracers, "export_program", lambda m, a, k, d, u: original(m, a, k, "static", u))
        try:
            return lrpgraph.explain(twin, inputs, **kwargs)
        finally:
            monkeypatch.setattr(tracers, "export_program", counting)

    monkeypatch.setattr(tracers, "export_program", counting)
    counting.calls, counting.static = counted, static
    return counting


def _language_model(name):
    if name == "llama":
        return tiny_llama(max_position_embeddings=512)
    torch.manual_seed(0)
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=512)
        return transformers.GPT2LMHeadModel(config).double().eval()
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=3,
        max_position_embeddings=512,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).double().eval()


def _close(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_a_second_shape_makes_one_trace_for_every_batch_and_length(name, exports):
    model = _language_model(name)
    shapes = [(b, t) for t in (7, 2, 1, 300) for b in (2, 1, 5)]
    target = 2 if name == "bert" else 5
    results = {}
    for batch, length in shapes:
        ids = torch.randint(3, 64, (batch, length), generator=torch.Generator().manual_seed(batch * 1000 + length))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        results[(batch, length)] = (inputs, lrpgraph.explain(model, inputs, target=target, rules="attnlrp"))
    assert exports.calls == ["static", "batch-and-ids"]  # the first call's shapes, then one for all the others
    for (batch, length), (inputs, ex) in results.items():
        if (batch, length) in ((1, 1), (5, 2), (2, 300)):  # a static reference for a few of them
            reference = exports.static(model, inputs, target=target, rules="attnlrp")
            assert ex.relevance["input_ids"].shape == (batch, length)
            assert _close(ex.relevance["input_ids"], reference.relevance["input_ids"]) <= 1e-6


def test_a_cnn_serves_every_batch_and_image_size_after_a_second_size(exports):
    model = vgg_like()
    for size in (16, 24, 20):
        for batch in (1, 2, 5):
            x = torch.randn(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
            ex = lrpgraph.explain(model, x, target=1, rules="epsilon-plus")
            if batch == 2:
                reference = exports.static(model, x, target=1, rules="epsilon-plus")
                assert _close(ex.relevance["input"], reference.relevance["input"]) <= 1e-6
    # the first call static, the batch symbolic at the second batch size, image sizes once a second size is seen
    assert exports.calls == ["static", "batch-and-ids", "all"]


class Unrolled(nn.Module):
    """Python loop over the sequence, like Mamba's CPU scan: torch.export fixes the length."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        state = torch.zeros_like(h[:, 0])
        for t in range(h.shape[1]):
            state = 0.5 * state + h[:, t]
        return self.head(state)


def test_a_dimension_the_model_fixes_is_traced_per_size_and_said_once(exports):
    model = Unrolled().double().eval()
    ids = torch.randint(0, 10, (2, 4))
    lrpgraph.explain(model, {"input_ids": ids}, target=0)
    lrpgraph.explain(model, {"input_ids": torch.randint(0, 10, (3, 4))}, target=0)
    lrpgraph.explain(model, {"input_ids": torch.randint(0, 10, (1, 4))}, target=0)
    assert exports.calls == ["static", "batch-and-ids"]  # the batch is symbolic from the second call
    with pytest.warns(UserWarning, match=r"input_ids\.shape\[1\].*traced again"):
        lrpgraph.explain(model, {"input_ids": torch.randint(0, 10, (2, 5))}, target=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        lrpgraph.explain(model, {"input_ids": torch.randint(0, 10, (2, 6))}, target=0)
    assert len(exports.calls) == 4


def test_memory_budget_schedules_follow_the_call_shape(exports):
    model = _language_model("llama")
    for length in (16, 48):
        ids = torch.randint(3, 64, (2, length))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        free = lrpgraph.explain(model, inputs, target=5, rules="attnlrp")
        budget = free.stats["peak_activation_bytes"] // 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tight = lrpgraph.explain(model, inputs, target=5, rules="attnlrp", memory_budget=budget)
        assert _close(tight.relevance["input_ids"], free.relevance["input_ids"]) <= 1e-9
        assert tight.stats["peak_activation_bytes"] < free.stats["peak_activation_bytes"]
    assert exports.calls == ["static", "batch-and-ids"]


class Clipped(nn.Module):
    """Reads at most 4 positions: min() of a symbolic length is a `torch.sym_min` call in the graph."""

    def forward(self, x):
        return x[:, : min(x.shape[1], 4)] * 2


def test_sizes_computed_with_min_need_no_second_trace():
    from lrpgraph.capture.canonical import is_functional

    dims = ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},)
    program = torch.export.export(Clipped(), (torch.randn(2, 6),), dynamic_shapes=dims, strict=False)
    assert any(n.target is torch.sym_min for n in program.graph.nodes)
    assert is_functional(program.graph)  # else the program is traced again by run_decompositions (Mamba: 2× export)


class BatchOfTwo(nn.Module):
    """Its code branches on the batch size: a trace of a batch of 2 serves only a batch of 2."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x) * (3.0 if x.shape[0] == 2 else 2.0)


def test_a_call_of_one_is_not_run_through_a_trace_fixed_to_the_widened_two(exports):
    torch.manual_seed(0)
    model = BatchOfTwo().double().eval()
    x = torch.randn(1, 4, dtype=torch.float64)
    with shapes_vary():  # a dynamic trace from the first call: torch traces a widened batch of 2
        ex = lrpgraph.explain(model, x, target=0, rules="epsilon")
    torch.testing.assert_close(ex.output, model(x), rtol=0, atol=1e-12)  # the branch of a batch of 1
    lin = model.linear
    epsilon = 1e-6  # the preset's: R_x = x·w · y / (z + ε·sign z), y = 2z
    z = lin(x)[0, 0]
    expected = x[0] * lin.weight[0] * 2.0 * z / (z + epsilon * z.sign())
    torch.testing.assert_close(ex.relevance["x"][0], expected, rtol=1e-12, atol=0)
    assert exports.calls == ["batch-and-ids"]  # one export: the widened trace was dropped inside it


class Flagged(nn.Module):
    """A bool between two tensors: a trace's conditions index every input leaf, not only the tensors."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x, flag, y):
        return self.linear(x) * (2.0 if flag else 1.0) + self.linear(y[:, :4])


def test_a_non_tensor_input_before_a_tensor_is_checked_in_place(exports):
    model = Flagged().double().eval()
    for batch, width in ((3, 6), (5, 6), (5, 8)):
        x, y = torch.randn(batch, 4, dtype=torch.float64), torch.randn(batch, width, dtype=torch.float64)
        ex = lrpgraph.explain(model, (x, True, y), target=0, rules="epsilon")
        torch.testing.assert_close(ex.output, model(x, True, y), rtol=0, atol=1e-12)
        assert ex.relevance["y"].shape == (batch, width)
    # static first, the batch symbolic at the second call, and y's width (a float dimension) at the third
    assert exports.calls == ["static", "batch-and-ids", "all"]


def test_explain_many_traces_symbolic_sizes_from_its_first_batch(exports):
    """A corpus's batches differ in size and length: explain_many asks for the dynamic trace at once (one export),
    and a single call after it is served by that trace."""
    model = _language_model("llama")
    corpus = [{"input_ids": torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(n))} for n in (4, 9, 6)]
    results = lrpgraph.explain_many(model, corpus, target=5, rules="attnlrp", batch_size=2)
    assert [r.relevance["input_ids"].shape[-1] for r in results] == [4, 9, 6]
    ids = torch.randint(3, 64, (1, 13))
    lrpgraph.explain(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, target=5, rules="attnlrp")
    assert exports.calls == ["batch-and-ids"]
