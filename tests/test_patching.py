"""Relevance patching against attribution patching where ρ is the gradient (bias-free ReLU networks), RelP's ρ
against the walk's relevance, activation patching against a forward patched by hand, and bad input."""

import copy

import pytest
import torch
from models import relu_mlp, wide_llama
from torch import nn

import lrpgraph


def difference(out: torch.Tensor) -> torch.Tensor:
    return out[:, 1] - out[:, 2]


def test_relp_is_attribution_patching_where_rho_is_the_gradient():
    """0-rule on linear layers and the identity through ReLU: ρ is the gradient, so RelP = attribution patching."""
    model = relu_mlp()
    clean, corrupted = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    points = ["0", "1", "2:input", "3"]
    relp = lrpgraph.relevance_patching(model, clean, corrupted, difference, points)
    atp = lrpgraph.attribution_patching(model, clean, corrupted, difference, points)
    for point in points:
        assert relp.effects[point].abs().max() > 0
        torch.testing.assert_close(relp.effects[point], atp.effects[point], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(relp.metric_corrupted, difference(model(corrupted)).detach())
    torch.testing.assert_close(relp.metric_clean, difference(model(clean)).detach())
    # linear in the point: the first-order estimate is exact for the last hidden layer's input
    exact = lrpgraph.activation_patching(model, clean, corrupted, difference, "4:input", components=[torch.ones(10)])
    torch.testing.assert_close(exact[0], atp.per_unit("3").sum(-1), rtol=1e-12, atol=1e-14)


def logit_difference(out: torch.Tensor) -> torch.Tensor:
    return out[:, -1, 5] - out[:, -1, 9]


def outputs_of(model: nn.Module, path: str, ids: torch.Tensor) -> torch.Tensor:
    """A module's output in a plain forward, read with a hook (on a copy: the test's model stays untouched)."""
    copy_ = copy.deepcopy(model)
    seen = {}
    handle = copy_.get_submodule(path).register_forward_hook(lambda m, i, o: seen.setdefault("v", o.detach()))
    with torch.no_grad():
        copy_(input_ids=ids)
    handle.remove()
    return seen["v"]


def test_relp_rho_is_the_walks_relevance_over_the_activation():
    """R = a ⊙ ρ: the relevance `explain` records at the point, seeded with out ⊙ ∂metric/∂out at the corrupted run,
    is the corrupted activation times the ρ RelP multiplies the activation difference with."""
    model = wide_llama()
    clean, corrupted = torch.randint(3, 64, (2, 6)), torch.randint(3, 64, (2, 6))
    point = "model.layers.0.mlp"
    relp = lrpgraph.relevance_patching(model, {"input_ids": clean}, {"input_ids": corrupted}, logit_difference, [point])
    a_clean, a_corr = outputs_of(model, point, clean), outputs_of(model, point, corrupted)

    def seed(out):
        leaf = out.detach().clone().requires_grad_()
        (grad,) = torch.autograd.grad(logit_difference(leaf).sum(), leaf)
        return out * grad

    ex = lrpgraph.explain(model, {"input_ids": corrupted}, target=seed, rules="relp", record=[point])
    # (a_clean − a_corr) ⊙ ρ ⊙ a_corr = (a_clean − a_corr) ⊙ R, without dividing by anything; the walk and the
    # replay agree to ~1e-7 of the peak here (lrpgraph.verify), a wrong ρ (the gradient) differs by O(1)
    product, expected = relp.effects[point] * a_corr, (a_clean - a_corr) * ex.latent[point]
    assert (product - expected).abs().max() <= 1e-6 * expected.abs().max()
    atp = lrpgraph.attribution_patching(
        model, {"input_ids": clean}, {"input_ids": corrupted}, logit_difference, [point]
    )
    gap = (relp.effects[point] - atp.effects[point]).abs().max()
    assert gap > 1e-2 * atp.effects[point].abs().max()  # through a transformer ρ is not the gradient
    assert relp.per_position(point).shape == (2, 6) and relp.per_unit(point).shape == (2, 32)


def test_activation_patching_is_a_forward_patched_by_hand():
    model = wide_llama()
    clean, corrupted = torch.randint(3, 64, (2, 6)), torch.randint(3, 64, (2, 6))
    point = "model.layers.0.mlp"
    effects = lrpgraph.activation_patching(
        model, {"input_ids": clean}, {"input_ids": corrupted}, logit_difference, point, components="positions"
    )
    assert effects.shape == (6, 2)
    a_clean = outputs_of(model, point, clean)
    with torch.no_grad():
        base = logit_difference(model(input_ids=corrupted).logits)
    for t in (0, 3, 5):
        patched_model = copy.deepcopy(model)

        def patch(module, inputs, output, t=t):
            output = output.clone()
            output[:, t] = a_clean[:, t]
            return output

        patched_model.get_submodule(point).register_forward_hook(patch)
        with torch.no_grad():
            expected = logit_difference(patched_model(input_ids=corrupted).logits) - base
        torch.testing.assert_close(effects[t], expected, rtol=1e-10, atol=1e-12)


def test_bad_input_is_an_error():
    model = relu_mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    with pytest.raises(lrpgraph.InputError, match="same shapes"):
        lrpgraph.relevance_patching(model, x, torch.randn(2, 6, dtype=torch.float64), difference, ["0"])
    with pytest.raises(lrpgraph.InputError, match="did you mean '2'"):
        lrpgraph.attribution_patching(model, x, x, difference, ["2x"])
    with pytest.raises(lrpgraph.InputError, match=r"one value per sample \[3\]"):
        lrpgraph.relevance_patching(model, x, x, lambda out: out, ["0"])
    with pytest.raises(lrpgraph.InputError, match="'positions', 'units' or a list of masks"):
        lrpgraph.activation_patching(model, x, x, difference, "0", components="heads")
    with pytest.raises(lrpgraph.InputError, match="needs a sequence point"):
        lrpgraph.activation_patching(model, x, x, difference, "0", components="positions")


class SelfAttention(nn.Module):
    """Bias-free single-layer attention: fused (SDPA) or written out (q·kᵀ, softmax, p·v)."""

    def __init__(self, fused: bool):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8, bias=False, dtype=torch.float64) for _ in range(4))
        self.fused = fused

    def forward(self, x):
        q, k, v = (f(x).unflatten(-1, (2, 4)).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.fused:
            mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-1, -2)) / 2.0
            scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
            mixed = torch.softmax(scores, -1) @ v
        return self.o(mixed.transpose(1, 2).flatten(-2))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_by_its_gradient_is_gradient_times_input(fused):
    """relp with attention "gradient" (RelP's other choice) on a bias-free attention layer: every rule is gradient ×
    input, so the explanation is the model's gradient × input (float64, 1e-10); the constant-attention default is
    not."""
    torch.manual_seed(0)
    model = SelfAttention(fused).eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    rules = lrpgraph.preset("relp").with_rules(attention="gradient", attention_values="gradient", matmul="gradient")
    ex = lrpgraph.explain(model, x, target=(0, 4, 3), rules=rules)
    h = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(h)[0, 4, 3], h)
    expected = (x * grad).detach()
    assert (ex.relevance["x"] - expected).abs().max() <= 1e-10 * expected.abs().max()
    assert lrpgraph.verify(model, x, target=(0, 4, 3), rules=rules, tolerance=1e-8).ok
    constant = lrpgraph.explain(model, x, target=(0, 4, 3), rules="relp")
    assert (constant.relevance["x"] - expected).abs().max() > 1e-3 * expected.abs().max()
