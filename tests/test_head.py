"""A language model's vocabulary head is deferred: explain computes its logits at the rows the seed reads only,
and `Explanation.output` makes the full logits when first read. Every result must equal the path that computes
the head in full (reached here by giving the same seed as a dense tensor, which the head cannot defer)."""

from __future__ import annotations

import pytest
import torch
from models import tiny_llama

import lrpgraph
from lrpgraph import Targets
from lrpgraph.api.explanation import raw_output
from lrpgraph.api.targets import TokenAt, seed_rows
from lrpgraph.engine.output import DeferredOutput
from lrpgraph.errors import InputError, TargetError


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def batch():
    """Two prompts of 7 and 5 tokens, right-padded (as explain_many pads them)."""
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


SINGLE = [None, 5, [3, 9], TokenAt([2, 4], [7, -1]), (1, 3, 8), (0, -1, 2)]


@pytest.mark.parametrize("rules", ["attnlrp", "epsilon", "cp-lrp"])
@pytest.mark.parametrize("target", SINGLE, ids=lambda t: type(t).__name__)
def test_a_deferred_head_equals_the_full_head(model, batch, rules, target):
    ex = lrpgraph.explain(model, batch, target=target, rules=rules)
    assert isinstance(raw_output(ex), DeferredOutput)
    seed = ex.seed.clone()
    full = lrpgraph.explain(model, batch, target=seed, rules=rules)
    assert isinstance(raw_output(full), torch.Tensor)
    torch.testing.assert_close(ex.relevance["input_ids"], full.relevance["input_ids"], rtol=0, atol=1e-12)
    torch.testing.assert_close(ex.conservation.seed, full.conservation.seed, rtol=0, atol=0)
    torch.testing.assert_close(ex.output, logits(model, batch), rtol=0, atol=1e-12)
    assert not ex.output.is_inference() and not ex.output.requires_grad


def test_the_seed_holds_the_logits_it_explains(model, batch):
    """Value seeds read the head's rows: logit of id 5 at each sample's last real position (6 and 4)."""
    ex = lrpgraph.explain(model, batch, target=5, rules="attnlrp")
    out = logits(model, batch)
    expected = torch.stack([out[0, 6, 5], out[1, 4, 5]])
    torch.testing.assert_close(ex.conservation.seed, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rules", ["attnlrp", "abslrp"])
def test_k_targets_and_contrast_through_a_deferred_head(model, batch, rules):
    """K maps (Targets, an id matrix) and contrastive seeds equal one explain per target. absLRP's rule at the head
    normalises its relevance (not linear in it), so its head is computed in full."""
    several = lrpgraph.explain(model, batch, target=Targets([3, (0, 2, 5)]), rules=rules)
    for k, one in enumerate([3, (0, 2, 5)]):
        alone = lrpgraph.explain(model, batch, target=one, rules=rules)
        torch.testing.assert_close(several.relevance["input_ids"][k], alone.relevance["input_ids"], atol=1e-12, rtol=0)
    matrix = lrpgraph.explain(model, batch, target=torch.tensor([[1, 2], [3, 4]]), rules=rules)
    for k in range(2):
        alone = lrpgraph.explain(model, batch, target=torch.tensor([[1, 2], [3, 4]])[:, k], rules=rules)
        torch.testing.assert_close(matrix.relevance["input_ids"][k], alone.relevance["input_ids"], atol=1e-12, rtol=0)
    contrast = lrpgraph.explain(model, batch, target=5, rules=rules, contrastive=True)
    assert isinstance(raw_output(contrast), DeferredOutput if rules == "attnlrp" else torch.Tensor)
    torch.testing.assert_close(contrast.output, logits(model, batch), rtol=0, atol=1e-12)


def test_the_default_target_is_predicted_at_the_last_real_position(model, batch):
    """Right padding: sample 1's own next token (argmax at position 4), not the one predicted at padding."""
    ex = lrpgraph.explain(model, batch, rules="attnlrp")
    out = logits(model, batch)
    seed = ex.seed
    assert int(seed[1, 4].nonzero()) == int(out[1, 4].argmax())
    assert int(seed[0, 6].nonzero()) == int(out[0, 6].argmax())
    alone = lrpgraph.explain(model, {"input_ids": batch["input_ids"][1:, :5]}, rules="attnlrp")
    torch.testing.assert_close(ex.relevance["input_ids"][1, :5], alone.relevance["input_ids"][0], atol=1e-10, rtol=0)


def test_targets_the_head_cannot_defer_compute_it_in_full(model, batch):
    """A function of the output needs all of it; a model without a [B, T, V] linear head has nothing to defer."""
    ex = lrpgraph.explain(model, batch, target=lambda out: out * (out == out.amax(-1, keepdim=True)), rules="epsilon")
    assert isinstance(raw_output(ex), torch.Tensor)
    classifier = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    ex = lrpgraph.explain(classifier, torch.randn(2, 4, dtype=torch.float64), target=1, rules="epsilon")
    assert isinstance(raw_output(ex), torch.Tensor)


def test_bad_targets_still_say_what_is_wrong(model, batch):
    for target, message in [(64, "out of range"), ((2, 0, 0), "out of range"), (TokenAt([9, 0], [1, 1]), "positions")]:
        assert seed_rows(target, torch.Size((2, 7, 64)), None, "value") is None
        with pytest.raises(TargetError, match=message):
            lrpgraph.explain(model, batch, target=target, rules="attnlrp")


def test_seed_rows(model):
    shape = torch.Size((2, 7, 64))

    def rows(target, positions=None, style="value"):
        found = seed_rows(target, shape, positions, style)
        return None if found is None else found.tolist()

    assert rows(None, torch.tensor([6, 4])) == [6, 11]
    assert rows(3) == [6, 13]
    assert rows(3, style="passes") == [6, 13]
    assert rows(TokenAt([2, 4], [7, -1])) == [2]
    assert rows(Targets([(1, -1, 0), 3]), torch.tensor([6, 4])) == [6, 11, 13]
    assert rows(Targets([(0, 2, 5), (1, 3, 8)])) == [2, 10]  # a list of index tuples, not an id matrix
    assert rows([[1, 2], [3, 4]], torch.tensor([6, 4])) == [6, 11]
    assert rows(lambda out: out) is None
    assert rows(Targets([3, lambda out: out])) is None
    assert rows(torch.zeros(shape)) is None
    assert rows(Targets([3]), style="passes") is None  # refused: the explain says why
    assert seed_rows(3, torch.Size((2, 64)), None, "value") is None


def test_the_output_is_refused_once_the_head_weights_changed_in_place(batch):
    model = tiny_llama()
    read = lrpgraph.explain(model, batch, rules="attnlrp")
    unread = lrpgraph.explain(model, batch, rules="attnlrp")
    before = logits(model, batch)
    torch.testing.assert_close(read.output, before, rtol=0, atol=1e-12)
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    torch.testing.assert_close(read.output, before, rtol=0, atol=1e-12)  # computed before the change, kept
    with pytest.raises(InputError, match=r"read `\.output` before changing them"):
        unread.output  # noqa: B018
    model = tiny_llama()
    unread = lrpgraph.explain(model, batch, rules="attnlrp")
    model.float()  # swaps each parameter's data
    with pytest.raises(InputError, match="given new data, moved or cast"):
        unread.output  # noqa: B018
    model = tiny_llama()
    unread = lrpgraph.explain(model, batch, rules="attnlrp")
    before = logits(model, batch)
    model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))  # a new object: ours is intact
    torch.testing.assert_close(unread.output, before, rtol=0, atol=1e-12)


def test_index_tuples_as_targets_through_a_deferred_head(model, batch):
    """Targets of index tuples only (a list of int tuples, which is not an id matrix) read the rows they name."""
    ex = lrpgraph.explain(model, batch, target=Targets([(0, 2, 5), (1, 3, 8)]), rules="attnlrp")
    assert isinstance(raw_output(ex), DeferredOutput)
    out = ex.output
    torch.testing.assert_close(ex.conservation.seed[0, 0], out[0, 2, 5], rtol=0, atol=0)
    torch.testing.assert_close(ex.conservation.seed[1, 1], out[1, 3, 8], rtol=0, atol=0)
    torch.testing.assert_close(out, logits(model, batch), rtol=0, atol=1e-12)


def test_the_output_holds_the_very_logits_the_seed_explains(batch):
    """In float32 the head's rows and the full head may differ in the last bit; the output keeps the explained rows."""
    model = tiny_llama().float()
    ex = lrpgraph.explain(model, batch, target=5, rules="attnlrp")
    torch.testing.assert_close(ex.conservation.seed, torch.stack([ex.output[0, 6, 5], ex.output[1, 4, 5]]).double(),
                               rtol=0, atol=0)  # fmt: skip
    torch.testing.assert_close(ex.output, logits(model, batch), rtol=1e-6, atol=1e-7)


def test_autocast_around_explain_does_not_apply(batch):
    """The traced graph runs in the model's dtypes (a float32 graph under autocast fails torch's dtype checks);
    its output, read later under autocast or inference mode, is the float32 logits as a plain tensor."""
    model = tiny_llama().float()
    with torch.no_grad():
        expected = model(**batch).logits
    plain = lrpgraph.explain(model, batch, target=5, rules="attnlrp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ex = lrpgraph.explain(model, batch, target=5, rules="attnlrp")
    torch.testing.assert_close(ex.relevance["input_ids"], plain.relevance["input_ids"], rtol=0, atol=0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = ex.output
    assert output.dtype == torch.float32 and not output.is_inference()
    torch.testing.assert_close(output, expected, rtol=1e-6, atol=1e-7)


def test_explain_many_keeps_positions_a_model_adds_to_its_input():
    """A model that prepends two learned positions: its outputs are longer than its inputs and are not cut."""

    class Prefixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed, self.prefix = torch.nn.Embedding(10, 4), torch.nn.Parameter(torch.randn(1, 2, 4))
            self.body, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 10)

        def forward(self, input_ids):
            h = self.embed(input_ids)
            h = torch.cat([self.prefix.expand(h.shape[0], -1, -1), h], 1)
            return self.head(torch.relu(self.body(h)))

    model = Prefixed().double().eval()
    items = [{"input_ids": torch.tensor([1, 2, 3])}, {"input_ids": torch.tensor([4, 5, 6])}]
    for ex, item in zip(lrpgraph.explain_many(model, items, target=3, rules="epsilon"), items, strict=True):
        assert isinstance(raw_output(ex), DeferredOutput)
        with torch.no_grad():
            torch.testing.assert_close(ex.output, model(item["input_ids"][None]), rtol=0, atol=1e-12)


def test_explain_many_results_hold_their_own_deferred_output(model):
    items = [{"input_ids": torch.randint(0, 64, (n,), generator=torch.Generator().manual_seed(n))} for n in (5, 9, 3)]
    results = lrpgraph.explain_many(model, items, rules="attnlrp")
    for item, ex in zip(items, results, strict=True):
        held = raw_output(ex)
        assert isinstance(held, DeferredOutput) and held.x.shape == (1, len(item["input_ids"]), 16)
        torch.testing.assert_close(ex.output, logits(model, {"input_ids": item["input_ids"][None]}), atol=1e-12, rtol=0)
        alone = lrpgraph.explain(model, {"input_ids": item["input_ids"][None]}, rules="attnlrp")
        assert int(ex.seed.nonzero()[0, -1]) == int(alone.seed.nonzero()[0, -1])


def test_saving_a_deferred_output_writes_the_full_logits(model, batch, tmp_path):
    ex = lrpgraph.explain(model, batch, rules="attnlrp")
    loaded = lrpgraph.load(ex.save(tmp_path / "ex.safetensors"))
    torch.testing.assert_close(loaded.output, logits(model, batch), rtol=0, atol=1e-12)


def test_a_pickled_or_copied_explanation_carries_the_computed_output(model, batch):
    import copy
    import pickle

    ex = lrpgraph.explain(model, batch, rules="attnlrp")
    for clone in (pickle.loads(pickle.dumps(ex)), copy.deepcopy(ex)):
        assert isinstance(raw_output(clone), torch.Tensor)
        torch.testing.assert_close(clone.output, logits(model, batch), rtol=0, atol=1e-12)


class _Rows(torch.nn.Module):
    """Logits over 2 rows per sample (a decoder taking each sample's codebooks as rows), the mask per sample."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(16, 4)
        self.head = torch.nn.Linear(4, 16)

    def forward(self, input_ids, attention_mask):
        return self.head(self.embed(input_ids) * attention_mask.repeat_interleave(2, 0)[..., None])


def test_a_mask_of_other_rows_than_the_output_leaves_the_last_position():
    """A [2, T] mask beside [4, T, C] logits says nothing about the logits' rows: the default target is each row's
    prediction at the last position (it was an error)."""
    ids = torch.randint(0, 16, (4, 5), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 5, dtype=torch.long)
    model = _Rows().eval()
    ex = lrpgraph.explain(model, {"input_ids": ids, "attention_mask": mask}, rules="epsilon")
    out = model(ids, mask).detach()
    seed = ex.seed
    assert all(int(seed[b, 4].nonzero()) == int(out[b, 4].argmax()) for b in range(4))
    assert not seed[:, :4].any()


class BiasedHead(torch.nn.Module):
    """Token embeddings, a tanh layer and a vocabulary head 32× wider than its input, with a bias (float64)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.embed, self.mix, self.head = torch.nn.Embedding(40, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 256)
        self.double().eval()

    def forward(self, input_ids):
        return self.head(torch.tanh(self.mix(self.embed(input_ids))))


@pytest.mark.parametrize(
    "build, rules",
    [
        (lambda: tiny_llama(vocab_size=512), "attnlrp"),
        (BiasedHead, "epsilon"),
        (BiasedHead, {"linear": {"rule": "gamma", "gamma": 0.5}}),
        (BiasedHead, {"linear": {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0}}),
    ],
)
@pytest.mark.parametrize("target", [5, TokenAt([2, 4], [7, 9])], ids=["one", "two-columns"])
def test_a_wide_head_runs_on_the_columns_its_seed_reaches(build, rules, target, monkeypatch):
    """A head with at least 8× more outputs than inputs runs its rule on the output columns that get relevance
    (each column's share needs only its own weights, bias and output): the same relevance and absorbed bias as the
    whole head, which the dense seed computes."""
    from lrpgraph.ops.linear_maps import Dense

    model, seen = build(), []
    columns = Dense.columns
    monkeypatch.setattr(Dense, "columns", lambda self, index: seen.append(index.numel()) or columns(self, index))
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(2))
    ex = lrpgraph.explain(model, ids, target=target, rules=rules)
    assert seen == [1 if target == 5 else 2]
    full = lrpgraph.explain(model, ids, target=ex.seed.clone(), rules=rules)
    assert isinstance(raw_output(full), torch.Tensor) and len(seen) == 1
    torch.testing.assert_close(ex.relevance["input_ids"], full.relevance["input_ids"], rtol=0, atol=1e-12)
    assert ex.conservation.absorbed == pytest.approx(full.conservation.absorbed, rel=1e-12, abs=1e-15)
