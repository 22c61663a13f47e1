"""Every architecture of the built-in zoo explains end to end with no fallback, and the explanation is proved:
`lrpgraph.verify` replays it under autograd (no rule kernel shared) and every node of the walk agrees to 1e-4.

Verified in float64 (a twin built with float64 defaults), so float32 rounding cannot hide a wrong rule; a
model whose own code fixes float32 is verified as built, each named below with what stops float64. The
transformers issue's fifteen architectures are also verified under CP-LRP.
"""

import pytest
import torch

import lrpgraph
from lrpgraph.tools.coverage import in_float64
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


FLOAT32 = {
    "xglm": "its attention mask is filled with a float64 minimum that overflows its float32 mask tensor",
    "canine": "its float64 twin's logits are not finite (explain refuses them)",
    "mra": "its code multiplies a float32 tensor it creates with the model's weights",
    "nllb_moe": "its router casts its Linear to float32 in place, which torch.export cannot trace in float64",
}


def built(arch):
    """The architecture with its inputs: in float64, unless its code fixes float32 (FLOAT32)."""
    if arch.name in FLOAT32:
        return arch.build()
    return in_float64(arch)


def check(arch, rules):
    model, inputs = built(arch)
    proof = lrpgraph.verify(model, inputs, rules=rules)
    ex = proof.explanation
    assert proof.ok and proof.unverified == [], (proof.max_error, proof.worst, proof.unverified)
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
def test_zoo_architecture_is_verified_with_attnlrp(name):
    (arch,) = architectures([name])
    check(arch, "attnlrp")


@pytest.mark.parametrize("name", ISSUE_ARCHITECTURES)
def test_architecture_is_verified_with_cp_lrp(name):
    (arch,) = architectures([name])
    check(arch, "cp-lrp")
