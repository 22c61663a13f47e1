"""HuggingFace ergonomics: token targets, explicit positions, outputs by name, latent relevance, padding."""

import warnings

import pytest
import torch
import transformers

import lrpgraph
from lrpgraph.tools.zoo import architectures

TIGHT = {"epsilon": 1e-10, "stabilizer": 1e-10}


@pytest.fixture(scope="module")
def llama():
    (arch,) = architectures(["llama"])
    return arch.build()


def test_token_target_is_the_last_real_position(llama):
    model, inputs = llama
    inputs = dict(inputs)
    mask = inputs["attention_mask"].clone()
    mask[1, 6:] = 0  # right padding: the last real token of sample 1 is at position 5
    inputs["attention_mask"] = mask
    ex = lrpgraph.explain(model, inputs, target=17, rules="attnlrp")
    nonzero = ex.seed.nonzero().tolist()
    assert nonzero == [[0, 7, 17], [1, 5, 17]]
    assert ex.conservation.seed[0].item() == pytest.approx(ex.output[0, 7, 17].item())


def test_explicit_position_target(llama):
    model, inputs = llama
    ex = lrpgraph.explain(model, inputs, target=(0, 3, 9), rules="attnlrp")
    assert ex.seed.nonzero().tolist() == [[0, 3, 9]]
    assert ex.relevance["input_ids"][1].abs().sum() == 0
    assert ex.relevance["input_ids"][0, 4:].abs().sum() == 0  # causal: later tokens cannot matter


def test_token_outside_the_vocabulary(llama):
    model, inputs = llama
    with pytest.raises(lrpgraph.TargetError, match="out of range"):
        lrpgraph.explain(model, inputs, target=96, rules="attnlrp")


def test_latent_relevance_at_module_outputs(llama):
    model, inputs = llama
    ex = lrpgraph.explain(
        model,
        inputs,
        target=5,
        rules=lrpgraph.preset("cp-lrp", **TIGHT),
        record=["model.layers.1.mlp", "model.layers.0.self_attn", "model.norm"],
    )
    assert ex.latent["model.layers.1.mlp"].shape == (2, 8, 32)
    assert ex.latent["model.layers.0.self_attn"].shape == (2, 8, 32)
    # the head has no bias: all relevance passes the final norm's output
    torch.testing.assert_close(ex.latent["model.norm"].sum((1, 2)).double(), ex.conservation.seed, rtol=1e-4, atol=1e-6)


def test_inputs_embeds_get_relevance_in_their_own_shape(llama):
    model, inputs = llama
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    by_ids = lrpgraph.explain(model, inputs, target=5, rules="attnlrp")
    by_embeds = lrpgraph.explain(
        model, {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]}, target=5, rules="attnlrp"
    )
    assert by_embeds.relevance["inputs_embeds"].shape == embeds.shape
    torch.testing.assert_close(by_embeds.relevance["inputs_embeds"].sum(-1), by_ids.relevance["input_ids"])


def test_outputs_by_name_for_an_encoder():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    model = transformers.BertModel(config).eval()
    ids = torch.randint(1, 64, (2, 6))
    hidden = lrpgraph.explain(model, {"input_ids": ids}, target=lambda h: h, rules="attnlrp")
    assert hidden.output.shape == (2, 6, 32)
    pooled = lrpgraph.explain(model, {"input_ids": ids}, target=lambda p: p, rules="attnlrp", output="pooler_output")
    assert pooled.output.shape == (2, 32)
    with pytest.raises(lrpgraph.InputError, match="last_hidden_state, pooler_output"):
        lrpgraph.explain(model, {"input_ids": ids}, output="hidden_states")


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_eager_attention_and_sdpa_give_the_same_relevance(name, method):
    """Attention written out (eager: matmul, softmax, matmul) and fused SDPA get the same numbers."""
    (arch,) = architectures([name])
    model, inputs = arch.build()
    inputs = dict(inputs)
    mask = inputs["attention_mask"].clone()
    mask[0, :2] = 0
    inputs["attention_mask"] = mask
    rules = lrpgraph.preset(method, **TIGHT)
    fused = lrpgraph.explain(model, inputs, target=1, rules=rules)
    model.set_attn_implementation("eager")
    try:
        manual = lrpgraph.explain(model, inputs, target=1, rules=rules)
    finally:
        model.set_attn_implementation("sdpa")
    assert any(k.startswith("attention_values:") for k in manual.stats["rules"])
    torch.testing.assert_close(fused.relevance["input_ids"], manual.relevance["input_ids"], rtol=1e-4, atol=1e-7)


def test_tokenizer_token_type_ids_are_left_out_for_models_without_them(llama):
    model, inputs = llama
    batch = transformers.BatchEncoding({**inputs, "token_type_ids": torch.zeros_like(inputs["input_ids"])})
    lrpgraph.clear_cache(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # traced with dynamic shapes: no "traced again for every shape" warning
        ex = lrpgraph.explain(model, batch, target=17, rules="attnlrp")
    plain = lrpgraph.explain(model, inputs, target=17, rules="attnlrp")
    assert list(ex.relevance) == list(plain.relevance)
    torch.testing.assert_close(ex.relevance["input_ids"], plain.relevance["input_ids"])
