"""AttnLRP and CP-LRP agree with an independent reference (gradient × input of a modified forward)."""

import pytest
import torch
import transformers
from attnlrp_reference import relevance

import lrpgraph

TIGHT = {"epsilon": 1e-10, "stabilizer": 1e-10}


def _tiny(name):
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    if name == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, num_key_value_heads=2))
    if name == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, num_key_value_heads=2))
    if name == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4))
    if name == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(**common, num_labels=3))
    raise ValueError(name)


@pytest.mark.parametrize("padding", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "bert"])
def test_agrees_with_gradient_times_input_of_the_modified_forward(name, method, padding):
    torch.manual_seed(0)
    model = _tiny(name).eval()
    ids = torch.randint(1, 64, (2, 7))
    mask = torch.ones_like(ids)
    if not padding:
        target = torch.tensor([0, 2]) if name == "bert" else torch.tensor([5, 11])
        positions = None if name == "bert" else torch.tensor([6, 6])
    elif name == "bert":
        mask[1, 5:] = 0  # right padding
        target = torch.tensor([0, 2])
        positions = None
    else:
        mask[1, :2] = 0  # left padding
        target = torch.tensor([5, 11])
        positions = torch.tensor([6, 6])
    inputs = {"input_ids": ids, "attention_mask": mask}
    ex = lrpgraph.explain(model, inputs, target=target, rules=lrpgraph.preset(method, **TIGHT))
    expected = relevance(model, inputs, target, method, positions)
    got = ex.relevance["input_ids"]
    assert got.shape == ids.shape
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-4 * scale, (got, expected)
    if padding:
        assert got[mask == 0].abs().max() <= 1e-6 * scale  # padded positions get no relevance
