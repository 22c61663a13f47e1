"""Every architecture of the built-in zoo explains end to end with no fallback and finite relevance.

The transformers issue's fifteen architectures are also checked under CP-LRP.
"""

import pytest
import torch

import lrpgraph
from lrpgraph.tools.zoo import ARCHITECTURES, architectures

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
INPUT_KEYS = {
    "tokens": {"input_ids"},
    "seq2seq": {"input_ids", "decoder_input_ids"},
    "pixels": {"pixel_values"},
    "audio-features": {"input_features"},
    "audio-wave": {"input_values"},
    "nodes": {"node_features"},
}


def check(arch, rules):
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, rules=rules)
    assert ex.fallbacks == []
    assert set(ex.relevance) == INPUT_KEYS[arch.inputs]
    for key, r in ex.relevance.items():
        assert r.shape == inputs[key].shape
        assert torch.isfinite(r).all(), (rules, key)
        assert r.abs().sum() > 0, (rules, key)
    assert torch.isfinite(ex.conservation.seed).all()


def test_zoo_is_large_enough():
    assert len(ARCHITECTURES) >= 30
    assert {a.family for a in ARCHITECTURES} >= {
        "decoder",
        "moe",
        "encoder",
        "encoder-decoder",
        "vision",
        "audio",
        "state-space",
    }


@pytest.mark.parametrize("name", [a.name for a in ARCHITECTURES])
def test_zoo_architecture_explains_with_attnlrp(name):
    (arch,) = architectures([name])
    check(arch, "attnlrp")


@pytest.mark.parametrize("name", ISSUE_ARCHITECTURES)
def test_architecture_explains_with_cp_lrp(name):
    (arch,) = architectures([name])
    check(arch, "cp-lrp")
