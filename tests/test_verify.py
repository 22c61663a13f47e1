"""`lrpgraph.verify`: the replay (every rule as a modified gradient, under autograd) equals the walk on every preset
that has gradient forms, on batches, K targets, records and memory budgets; a kernel wrong by 1% is caught and
located; rules without a gradient form are named."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from models import tiny_llama, vgg_like
from torch import nn

import lrpgraph
from lrpgraph.ops.registry import KERNELS

CNN_PRESETS = [
    "epsilon",
    "epsilon-plus",
    "epsilon-plus-flat",
    "epsilon-alpha2-beta1",
    lrpgraph.preset("epsilon-gamma-box", low=-3.0, high=3.0),
]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return vgg_like(batchnorm=True, dtype=torch.float64), torch.randn(2, 3, 16, 16, dtype=torch.float64)


@pytest.mark.parametrize("rules", CNN_PRESETS, ids=lambda r: r if isinstance(r, str) else r.name)
def test_every_classic_preset_is_verified_on_a_cnn(cnn, rules):
    model, x = cnn
    check = lrpgraph.verify(model, x, target=3, rules=rules, record=["6", "14"])
    assert check.ok and check.max_error < 1e-10 and not check.unverified, check
    assert set(check.errors) == {"input", "latent:6", "latent:14", "nodes"}
    assert check.explanation.relevance["input"].abs().sum() > 0


def test_targets_memory_budgets_and_batches_are_verified(cnn):
    model, x = cnn
    targets = lrpgraph.Targets([1, 4, 7])
    check = lrpgraph.verify(model, x, target=targets, rules="epsilon-plus", memory_budget=1 << 14)
    assert check.ok and check.max_error < 1e-10
    assert check.explanation.relevance["input"].shape == (3, 2, 3, 16, 16)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "pa-lrp"])
def test_transformer_presets_are_verified(rules):
    model = tiny_llama()
    ids = torch.tensor([[3, 17, 5, 9, 40, 2], [8, 8, 1, 63, 12, 30]])
    check = lrpgraph.verify(model, {"input_ids": ids}, rules=rules, record=["model.layers.1.mlp"])
    # the RMSNorm computes in float32 inside this float64 model; its casts round the replay's gradients
    assert check.ok and check.max_error < 1e-6, check
    if rules == "pa-lrp":
        assert "positional" in check.errors


def _broken(monkeypatch, op_class: str, rule: str) -> None:
    """The kernel `rule` of `op_class`, 1% off."""
    kernel = KERNELS[op_class][rule]

    def off(*args, **kwargs):
        result = kernel.fn(*args, **kwargs)
        if isinstance(result, (list, tuple)):
            return type(result)(None if r is None else 1.01 * r for r in result)
        return 1.01 * result

    monkeypatch.setitem(KERNELS[op_class], rule, dataclasses.replace(kernel, fn=off))
    lrpgraph.clear_cache()  # plans hold the kernels they chose


@pytest.mark.parametrize(
    ("op_class", "rule", "op", "rules"),
    [
        ("attention", "uniform", "aten.scaled_dot_product_attention.default", "attnlrp"),
        ("softmax", "taylor", "aten.softmax.int", "attnlrp"),
        ("linear", "epsilon", "aten.linear.default", "cp-lrp"),
        ("gate", "constant-gate", "aten.mul.Tensor", "cp-lrp"),
    ],
)
def test_a_kernel_one_percent_off_is_caught_and_located(monkeypatch, op_class, rule, op, rules):
    model = tiny_llama(attn_implementation="eager") if op_class == "softmax" else tiny_llama()
    ids = torch.tensor([[3, 17, 5, 9, 40, 2]])
    _broken(monkeypatch, op_class, rule)
    check = lrpgraph.verify(model, {"input_ids": ids}, rules=rules)
    assert not check.ok and check.max_error > 1e-3
    assert check.worst["rule"] == f"{op_class}:{rule}" and check.worst["op"] == op, check.worst
    lrpgraph.clear_cache()


def test_a_layer_kernel_one_percent_off_is_caught_on_a_cnn(monkeypatch, cnn):
    model, x = cnn
    _broken(monkeypatch, "conv", "zplus")
    check = lrpgraph.verify(model, x, target=3, rules="epsilon-plus")
    assert not check.ok and check.worst["rule"] == "conv:zplus" and check.worst["op"] == "aten.conv2d.default"
    lrpgraph.clear_cache()


def test_rules_without_a_gradient_form_are_named(cnn):
    model, x = cnn
    check = lrpgraph.verify(model, x, target=3, rules="abslrp")
    assert not check.ok
    assert any(u.startswith("conv:abs at node") and "no gradient form" in u for u in check.unverified)


def test_a_tolerance_must_be_positive(cnn):
    model, x = cnn
    with pytest.raises(lrpgraph.InputError, match="tolerance"):
        lrpgraph.verify(model, x, tolerance=0.0)


class Pixels(nn.Module):
    """z^B on an input with exact zeros: the bounds' terms, not a gradient times x, carry the zeros' relevance."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_bounds_terms_reach_inputs_that_are_zero():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    x[:, :, :3] = 0.0
    rules = lrpgraph.preset("epsilon-gamma-box", low=0.0, high=1.0)
    check = lrpgraph.verify(Pixels().double().eval(), x, target=2, rules=rules)
    assert check.ok and check.max_error < 1e-10
    assert check.explanation.relevance["x"][:, :, :3].abs().sum() > 0


# zoo architectures whose rules, ops or layouts once differed between the walk and the replay, or exercise forms no
# other test reaches: baddbmm with ALiBi, complex FFTs, as_strided windows, a relevant matrix-product bias, -inf
# router masks, recurrences, scatters, ids offset per column
ZOO = ["bloom", "fnet", "led", "wavlm", "llama4_text", "lstm", "message_passing", "tabular_offsets", "fourier_mixer"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_architectures_are_verified_in_float64(name):
    from lrpgraph.tools.coverage import in_float64
    from lrpgraph.tools.zoo import architectures

    (arch,) = architectures([name])
    model, inputs = in_float64(arch)  # constants the models make are float64 too
    check = lrpgraph.verify(model, inputs, rules="attnlrp")
    assert check.ok and check.max_error < 1e-6, (check.max_error, check.worst, check.unverified)


class CastIds(nn.Module):
    """Token ids cast to int32 and put after four prompt ids before the lookup, as CPM-Ant does."""

    def __init__(self, cast: bool):
        super().__init__()
        self.cast = cast
        self.embed, self.head = nn.Embedding(50, 8), nn.Linear(8, 3)

    def forward(self, ids):
        x = ids.to(torch.int32) if self.cast else ids
        prompt = torch.arange(4, dtype=x.dtype).repeat(ids.shape[0], 1)
        return self.head(self.embed(torch.cat([prompt, x], 1))).sum(1)


def test_ids_cast_before_the_lookup_are_verified():
    torch.manual_seed(0)
    cast, plain = CastIds(True).double(), CastIds(False).double()
    plain.load_state_dict(cast.state_dict())
    ids = torch.randint(0, 50, (2, 5))
    check = lrpgraph.verify(cast, ids, rules="attnlrp")
    assert check.ok and check.errors["ids"] < 1e-12  # the replay's shadow of the ids lost its gradient at the cast
    expected = lrpgraph.explain(plain, ids, rules="attnlrp").relevance["ids"]
    assert torch.allclose(check.explanation.relevance["ids"], expected, rtol=1e-12, atol=1e-14)
    assert float(expected.abs().sum()) > 0


class PickById(nn.Module):
    """Hidden states picked at positions computed from the ids (hash routing): relevant ids used as addresses."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(50, 8), nn.Linear(8, 3)

    def forward(self, ids):
        h = self.embed(ids)
        rows = torch.arange(ids.shape[0])[:, None]
        return self.head(h[rows, ids % ids.shape[1]].transpose(1, 2).contiguous().view(ids.shape[0], -1, 8)).sum(1)


def test_ids_used_as_addresses_are_verified():
    torch.manual_seed(0)
    model, ids = PickById().double(), torch.randint(0, 50, (2, 5))
    check = lrpgraph.verify(model, ids, rules="attnlrp")
    assert check.ok and not check.unverified and check.errors["ids"] < 1e-12


class _Tiny(nn.Module):
    """exp of x·1e-44: the identity rule's gradient form divides exp's output by a float32 subnormal (∞), so the
    replay's values are NaN there while the walk passes relevance on exactly."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(torch.exp(x * 1e-44))


def test_a_nan_in_the_replay_is_a_difference_and_is_located():
    """NaN compares as not above the tolerance; the node-by-node check must count it as a difference (it said the
    nodes agreed, 0.0, and named no node) and name where it first appears."""
    torch.manual_seed(0)
    check = lrpgraph.verify(_Tiny().eval(), torch.ones(2, 3), target=0)
    assert not check.ok and check.errors["nodes"] == float("inf")
    assert check.worst is not None and check.worst["differs_at"] == "exp"
