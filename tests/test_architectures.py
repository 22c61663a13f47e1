"""Every architecture of the transformers issue explains with no error and finite relevance, under both presets."""

import pytest
import torch

import lrpgraph
from lrpgraph.zoo import architectures

ISSUE_ARCHITECTURES = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "mixtral",
    "gemma3",
    "phi3",
    "gpt2",
    "gpt_neox",
    "bert",
    "roberta",
    "distilbert",
    "vit",
    "t5",
]


@pytest.mark.parametrize("name", ISSUE_ARCHITECTURES)
def test_architecture_explains_under_attnlrp_and_cp_lrp(name):
    (arch,) = architectures([name])
    model, inputs = arch.build()
    for rules in ("attnlrp", "cp-lrp"):
        ex = lrpgraph.explain(model, inputs, rules=rules)
        assert ex.fallbacks == []
        if arch.inputs == "pixels":
            assert set(ex.relevance) == {"pixel_values"}
            assert ex.relevance["pixel_values"].shape == inputs["pixel_values"].shape
        else:
            expected = {"input_ids", "decoder_input_ids"} if arch.inputs == "seq2seq" else {"input_ids"}
            assert set(ex.relevance) == expected
            for key in expected:
                assert ex.relevance[key].shape == inputs[key].shape
        for key, r in ex.relevance.items():
            assert torch.isfinite(r).all(), (rules, key)
            assert r.abs().sum() > 0, (rules, key)
        assert torch.isfinite(ex.conservation.seed).all()
