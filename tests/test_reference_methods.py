"""absLRP and PA-LRP exactly as their authors compute them: lrpgraph against the module-level references
written from ../shared/REFERENCE-METHODS.md, beside this repository (abslrp_reference.py, palrp_reference.py),
float64, 1e-5."""

import abslrp_reference
import palrp_reference
import pytest
import torch
import transformers
from reference_models import TinyViT, models

import lrpgraph


def _close(got, expected, tolerance=1e-5):
    scale = expected.abs().max().clamp_min(1e-30)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max() / scale) <= tolerance


@pytest.fixture(scope="module")
def cnn_and_vit():
    return models()


IMAGES = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
LABELS = torch.tensor([0, 3, 1])


@pytest.mark.parametrize("contrastive", [False, True], ids=["one-hot", "contrastive"])
@pytest.mark.parametrize("which", ["cnn", "vit", "vit-fused"])
def test_abslrp_equals_the_reference(cnn_and_vit, which, contrastive):
    cnn, vit = cnn_and_vit
    model = cnn if which == "cnn" else vit
    if which == "vit-fused":
        model = TinyViT(fused=True).double().eval()
        model.load_state_dict(vit.state_dict())
    # the authors' own code: the general pointwise rule for ReLU, the filter at every ViT dropout but pos_drop
    expected = abslrp_reference.relevance(model, IMAGES, LABELS, contrastive=contrastive, authors_code=True)
    ex = lrpgraph.explain(model, IMAGES, target=LABELS, rules="abslrp", contrastive=contrastive)
    _close(ex.relevance["x"], expected)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_pa_lrp_rotary_equals_the_reference(attention):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, attn_implementation=attention,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).double().eval()
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(5))
    target = torch.tensor([5, 11])
    expected = palrp_reference.llama_relevance(model, ids, target)
    ex = lrpgraph.explain(model, {"input_ids": ids}, target=target, rules="pa-lrp")
    _close(ex.relevance["input_ids"], expected["tokens"])
    _close(ex.positional, expected["positional"])


def test_pa_lrp_vision_setting_equals_the_reference(cnn_and_vit):
    _, vit = cnn_and_vit
    with torch.no_grad():
        vit.pos_embed.normal_()  # positions that matter
    expected = palrp_reference.vit_relevance(vit, IMAGES, LABELS)
    ex = lrpgraph.explain(vit, IMAGES, target=LABELS, rules="pa-lrp-vit")
    _close(ex.relevance["x"], expected["pixels"])
    _close(ex.positional, expected["positional"])  # per patch, the class token's row dropped
    _close(lrpgraph.viz.patches_to_pixels(ex.positional, 16, 4), expected["positional_pixels"])
    _close(ex.combined, expected["combined"])
