"""The four Zennit composites, reproduced on a VGG-shaped CNN with max and adaptive average pooling.

The expected values come from tests/zennit_reference.py, an independent module-level
re-implementation of Zennit's rules with autograd (Zennit itself cannot be installed here: it
requires torchvision).
"""

import pytest
import torch
import zennit_reference
from models import vgg_like

import lrpgraph

PRESETS = ["epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "epsilon-alpha2-beta1", "epsilon-plus"]


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("name", PRESETS)
def test_preset_matches_zennit(name, batchnorm):
    model = vgg_like(batchnorm=batchnorm)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        out = model(x)
    seed = torch.zeros_like(out)
    seed[0, 3] = 1.0  # Zennit's usual one-hot output relevance
    seed[1, 7] = 1.0
    params = {"low": -1.0, "high": 1.0} if "box" in name else {}
    ex = lrpgraph.explain(model, x, target=seed, rules=lrpgraph.preset(name, **params))
    expected = zennit_reference.attribute(model, x, seed, name, **params)
    assert ex.relevance["input"].shape == x.shape
    torch.testing.assert_close(ex.relevance["input"], expected, rtol=1e-7, atol=1e-10)


def test_first_layer_rule_applies_only_to_the_first_conv():
    model = vgg_like()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=0, rules=lrpgraph.preset("epsilon-gamma-box", low=0.0, high=1.0))
    assert ex.stats["rules"]["conv:zbox"] == 1
    assert ex.stats["rules"]["conv:gamma"] == 2
    assert ex.stats["rules"]["linear:epsilon"] == 2


def test_box_preset_without_bounds_says_what_to_pass():
    model = vgg_like()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(lrpgraph.RuleSetError, match="low"):
        lrpgraph.explain(model, x, target=0, rules="epsilon-gamma-box")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_matches_zennit_in_float32(name):
    model = vgg_like(batchnorm=True, dtype=torch.float32)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model(x)
    seed = torch.zeros_like(out)
    seed[:, 4] = 1.0
    params = {"low": -1.0, "high": 1.0} if "box" in name else {}
    ex = lrpgraph.explain(model, x, target=seed, rules=lrpgraph.preset(name, **params))
    expected = zennit_reference.attribute(model, x, seed, name, **params)
    scale = expected.abs().max()
    assert (ex.relevance["input"] - expected).abs().max() <= 1e-4 * scale
