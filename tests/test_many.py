"""explain_many: a corpus through one trace, in input order, padding removed, equal to one-by-one explains."""

import pytest
import torch
import transformers
from models import tiny_llama, vgg_like

import lrpgraph
from lrpgraph.engine import tracers


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).double().eval()


@pytest.fixture
def batch_shapes(monkeypatch):
    """The shape of each batch explain_many hands to explain (its images, or its input ids), in call order."""
    from lrpgraph.api import many

    shapes = []
    original = many.explain

    def recording(model, inputs, **options):
        shapes.append(tuple((inputs["input_ids"] if isinstance(inputs, dict) else inputs).shape))
        return original(model, inputs, **options)

    monkeypatch.setattr(many, "explain", recording)
    return shapes


def _corpus(lengths):
    generator = torch.Generator().manual_seed(7)
    return [{"input_ids": torch.randint(3, 64, (n,), generator=generator)} for n in lengths]


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_each_result_equals_its_own_explain(name, request, monkeypatch):
    model = request.getfixturevalue(name)
    corpus = _corpus([5, 9, 3, 9, 12, 1, 7, 4])
    targets = [5, 11, 2, 7, 5, 3, 9, 1] if name == "llama" else [0, 1, 2, 0, 1, 2, 0, 1]
    lrpgraph.clear_cache(model)
    calls = []
    original = tracers.export_program
    monkeypatch.setattr(tracers, "export_program", lambda *a: calls.append(1) or original(*a))
    results = lrpgraph.explain_many(model, corpus, target=targets, rules="attnlrp", batch_size=3)
    assert len(calls) == 1  # three padded batches of different lengths, one trace
    for item, target, ex in zip(corpus, targets, results, strict=True):
        alone = lrpgraph.explain(model, {"input_ids": item["input_ids"][None]}, target=target, rules="attnlrp")
        assert ex.relevance["input_ids"].shape == (1, len(item["input_ids"]))  # padding removed
        scale = alone.relevance["input_ids"].abs().max()
        assert (ex.relevance["input_ids"] - alone.relevance["input_ids"]).abs().max() <= 1e-6 * scale
        torch.testing.assert_close(ex.output, alone.output)
        torch.testing.assert_close(ex.conservation.seed, alone.conservation.seed)
        parts, own = ex.conservation.where_it_went(), alone.conservation.where_it_went()
        assert sum(parts.values()) == pytest.approx(float(ex.conservation.seed.sum()), rel=1e-9)
        absorbed = {k: v for k, v in parts.items() if k not in ex.relevance}
        own_absorbed = {k: v for k, v in own.items() if k not in ex.relevance}
        assert set(absorbed) <= {*own_absorbed, "mixed"}  # the batch's one category, or "mixed"
        assert sum(absorbed.values()) == pytest.approx(sum(own_absorbed.values()), rel=1e-6, abs=1e-12)
    single = lrpgraph.explain_many(model, corpus[:2], target=targets[:2], rules="attnlrp", batch_size=1)
    own = lrpgraph.explain(model, {"input_ids": corpus[1]["input_ids"][None]}, target=targets[1], rules="attnlrp")
    assert single[1].conservation.absorbed == pytest.approx(own.conservation.absorbed, rel=1e-9)


def test_images_and_an_empty_corpus(batch_shapes):
    model = vgg_like()
    images = [torch.randn(3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    results = lrpgraph.explain_many(model, images, target=2, rules="epsilon-plus", batch_size=2, max_tokens=1)
    assert [shape[0] for shape in batch_shapes] == [2, 2, 1]  # the token limit does not bound images
    for image, ex in zip(images, results, strict=True):
        alone = lrpgraph.explain(model, image[None], target=2, rules="epsilon-plus")
        torch.testing.assert_close(ex.relevance["input"], alone.relevance["input"])
    assert lrpgraph.explain_many(model, [], target=2) == []


def test_a_bad_input_is_reported_by_index_and_the_others_are_kept(llama):
    corpus = _corpus([4, 6, 5])
    corpus.insert(1, {"input_ids": torch.tensor([1, 2, 99])})  # 99 is outside the vocabulary
    with pytest.raises(lrpgraph.ExplainManyError, match=r"1 of 4 inputs failed — input 1: InputError") as info:
        lrpgraph.explain_many(llama, corpus, target=5, rules="attnlrp", batch_size=4)
    results = info.value.results
    assert results[1] is None and all(r is not None for i, r in enumerate(results) if i != 1)
    assert list(info.value.failures) == [1]
    alone = lrpgraph.explain(llama, {"input_ids": corpus[2]["input_ids"][None]}, target=5, rules="attnlrp")
    torch.testing.assert_close(results[2].relevance["input_ids"], alone.relevance["input_ids"])


def test_batches_hold_at_most_max_tokens(llama, batch_shapes):
    """Lengths 3, 5, 9, 12, 20 with batches of up to 4 and 20 tokens: [3, 5] (2 × 5 = 10), then 9 (3 × 9 = 27
    would pass 20), 12 (2 × 12 = 24) and 20 alone; without a token limit, [3, 5, 9, 12] and [20]."""
    shapes = batch_shapes
    corpus = _corpus([12, 3, 20, 9, 5])
    limited = lrpgraph.explain_many(llama, corpus, target=5, rules="attnlrp", batch_size=4, max_tokens=20)
    assert shapes == [(2, 5), (1, 9), (1, 12), (1, 20)]
    shapes.clear()
    unlimited = lrpgraph.explain_many(llama, corpus, target=5, rules="attnlrp", batch_size=4, max_tokens=None)
    assert shapes == [(4, 12), (1, 20)]
    for a, b in zip(limited, unlimited, strict=True):
        scale = b.relevance["input_ids"].abs().max()
        assert (a.relevance["input_ids"] - b.relevance["input_ids"]).abs().max() <= 1e-6 * scale
