"""absLRP and PA-LRP exactly as their authors compute them: lrpgraph against the module-level references
written from ../shared/REFERENCE-METHODS.md, beside this repository (abslrp_reference.py, palrp_reference.py),
in float64. absLRP is compared at 1e-11 of the map's largest entry, where the candidate formulas the text leaves
room for (each a switch of the reference) are shown to fail; PA-LRP at 1e-5."""

import abslrp_reference
import palrp_reference
import pytest
import torch
import transformers
from reference_models import TinyViT, models, resnet

import lrpgraph

ABSLRP_TOLERANCE = 1e-11  # lrpgraph's largest difference is ~1e-14; the nearest candidate differs by ~7e-10


def _error(got, expected):
    """max |got − expected| / max |expected|."""
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def _close(got, expected, tolerance=1e-5):
    assert _error(got, expected) <= tolerance


@pytest.fixture(scope="module")
def cnn_and_vit():
    return models()


IMAGES = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
LABELS = torch.tensor([0, 3, 1])


def _vit_like(vit, **options):
    model = TinyViT(**options).double().eval()
    model.load_state_dict(vit.state_dict())
    return model


def _case(which, cnn, vit):
    """(model, {candidate: its map as a function of `contrastive`}): the other formulas the text leaves room for."""

    def reference(model, **choices):
        return lambda contrastive: abslrp_reference.relevance(model, IMAGES, LABELS, contrastive, **choices)

    if which == "cnn":
        return cnn, {"ReLU as N1(2·1[x>0]·R)": reference(cnn, relu="indicator")}
    if which == "resnet":
        model = resnet()
        return model, {
            "ReLU as N1(2·1[x>0]·R)": reference(model, relu="indicator"),
            "local rule at identity shortcuts": reference(model, residual="local"),
        }
    if which == "vit":
        return vit, {
            "no filter at attn_drop": reference(vit, attn_drop_filter=False),
            "local rule at residual adds": reference(vit, residual="local"),
        }
    if which == "vit-fused":
        model = _vit_like(vit, fused=True)
        return model, {"local rule at residual adds": reference(model, residual="local")}
    model = _vit_like(vit, dropout=False)  # nn.Identity where the ViT has its dropouts: no filter there
    return model, {
        "filters as if the dropouts were there": reference(vit),
        "local rule at residual adds": reference(model, residual="local"),
    }


@pytest.mark.parametrize("contrastive", [False, True], ids=["one-hot", "contrastive"])
@pytest.mark.parametrize("which", ["cnn", "resnet", "vit", "vit-fused", "vit-without-dropout"])
def test_abslrp_equals_the_reference(cnn_and_vit, which, contrastive):
    """The authors' code (the reference's defaults: ReLU by the pointwise formula, the filter at every nn.Dropout but
    pos_drop, residual adds by the total derivative through the branch) to 1e-11; every other candidate fails it."""
    model, candidates = _case(which, *cnn_and_vit)
    expected = abslrp_reference.relevance(model, IMAGES, LABELS, contrastive=contrastive)
    got = lrpgraph.explain(model, IMAGES, target=LABELS, rules="abslrp", contrastive=contrastive).relevance["x"]
    assert _error(got, expected) <= ABSLRP_TOLERANCE
    for name, candidate in candidates.items():
        assert _error(got, candidate(contrastive)) > 10 * ABSLRP_TOLERANCE, name


@pytest.mark.parametrize("which", ["resnet", "vit"])
def test_abslrp_in_float32_is_the_float64_reference_rounded(which):
    """The branch's Jacobian in the model's own dtype: a float32 model is the float64 reference to float32 rounding
    (the local rule at residual adds is 5e-2 off or more)."""
    model = resnet(dtype=torch.float32) if which == "resnet" else models(dtype=torch.float32)[1]
    expected = resnet() if which == "resnet" else models()[1]
    for contrastive, tolerance in ((False, 2e-6), (True, 1e-4)):
        reference = abslrp_reference.relevance(expected, IMAGES, LABELS, contrastive)
        ex = lrpgraph.explain(model, IMAGES.float(), target=LABELS, rules="abslrp", contrastive=contrastive)
        assert ex.relevance["x"].dtype == torch.float32
        assert _error(ex.relevance["x"].double(), reference) <= tolerance


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
