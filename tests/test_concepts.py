"""Relevance at any point and conditional relevance (CRP): against autograd oracles on bias-free ReLU networks
(where LRP-0 is gradient × input, so a condition is a masked modified gradient), partitions of a layer's units,
the named points of a transformer, and bad input."""

import pytest
import torch
from models import relu_mlp, wide_llama
from torch import nn

import lrpgraph
from lrpgraph.propagate.walker import Walker

LRP0 = lrpgraph.preset("epsilon", epsilon=1e-30)


def oracle(model: nn.Sequential, x: torch.Tensor, target: int, masks: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """x ⊙ the modified gradient: at each conditioned layer output (index into the Sequential, outermost first) the
    gradient arriving there is multiplied by the mask and held constant, and only it is followed further down."""
    x = x.detach().requires_grad_()
    acts, h = {}, x
    for i, layer in enumerate(model):
        h = layer(h)
        acts[i] = h
    upstream = acts[len(model) - 1][:, target].sum()
    point, mask = masks[0]
    (rho,) = torch.autograd.grad(upstream, acts[point], retain_graph=True)
    for below, mask_below in masks[1:]:
        (rho,) = torch.autograd.grad(((mask * rho).detach() * acts[point]).sum(), acts[below], retain_graph=True)
        point, mask = below, mask_below
    (grad,) = torch.autograd.grad(((mask * rho).detach() * acts[point]).sum(), x)
    return (x * grad).detach()


def test_a_condition_is_the_masked_modified_gradient():
    """One point: each condition's input relevance equals x ⊙ ∂/∂x[(m ⊙ ρ)ᵀ a(x)] (float64, 1e-12)."""
    model, x = relu_mlp(), torch.randn(3, 6, dtype=torch.float64)
    conditions = [[0, 3], [5], [1, 2, 4, 6, 7, 8, 9, 10, 11]]
    ex = lrpgraph.explain(model, x, target=1, rules=LRP0, conditions={"0": conditions})
    assert ex.conditional["input"].shape == (3, 3, 6)
    for k, units in enumerate(conditions):
        mask = torch.zeros(12, dtype=torch.float64)
        mask[units] = 1
        expected = oracle(model, x, 1, [(0, mask)])
        torch.testing.assert_close(ex.conditional["input"][k], expected, rtol=1e-12, atol=1e-14)
    # a partition of the layer's units: the conditions sum to the unconditional relevance
    torch.testing.assert_close(ex.conditional["input"].sum(0), ex.relevance["input"], rtol=1e-12, atol=1e-14)


def test_conditions_at_two_points_apply_in_turn():
    model, x = relu_mlp(), torch.randn(2, 6, dtype=torch.float64)
    upper = [torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=torch.float64), [3, 4]]
    lower = [[0, 1, 2, 3, 4, 5], [6, 7]]
    ex = lrpgraph.explain(model, x, target=2, rules=LRP0, conditions={"2": upper, "0": lower})
    for k in range(2):
        m_up = upper[0] if k == 0 else torch.zeros(10, dtype=torch.float64).index_fill_(0, torch.tensor(upper[1]), 1)
        m_low = torch.zeros(12, dtype=torch.float64).index_fill_(0, torch.tensor(lower[k]), 1)
        expected = oracle(model, x, 2, [(2, m_up), (0, m_low)])
        torch.testing.assert_close(ex.conditional["input"][k], expected, rtol=1e-12, atol=1e-14)


def test_feature_map_channels_partition_and_concepts_rank_units(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(), nn.Flatten(),
        nn.Linear(5 * 4 * 4, 3, bias=False),
    ).double().eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=0, rules=LRP0, conditions={"2": [[c] for c in range(5)]})
    torch.testing.assert_close(ex.conditional["input"].sum(0), ex.relevance["input"], rtol=1e-10, atol=1e-14)
    per_channel = ex.latent["2"].sum((2, 3))
    index, values = ex.concepts("2", top=2)
    torch.testing.assert_close(values, per_channel.topk(2, dim=-1).values)
    assert torch.equal(index, per_channel.topk(2, dim=-1).indices)
    # what each channel sees: bias-free and LRP-0, its conditional map sums to the relevance the channel holds
    torch.testing.assert_close(ex.conditional["input"].sum((2, 3, 4)).T, per_channel, rtol=1e-10, atol=1e-14)
    again = lrpgraph.load(ex.save(tmp_path / "crp.safetensors"))
    assert torch.equal(again.conditional["input"], ex.conditional["input"])


def test_named_points_of_a_transformer():
    """A layer's residual stream, the heads before the output projection and the MLP's hidden neurons are module
    inputs; a node is named by its graph name. Conditioning every neuron in one condition is the whole point."""
    model = wide_llama()
    ids = torch.randint(3, 64, (2, 5))
    points = ["model.layers.1:input", "model.layers.0.self_attn.o_proj:input", "model.layers.0.mlp.down_proj:input"]
    halves = [list(range(24)), list(range(24, 48))]
    ex = lrpgraph.explain(
        model, {"input_ids": ids}, target=7, rules="attnlrp", record=points, conditions={points[2]: halves}
    )
    assert [tuple(ex.latent[p].shape) for p in points] == [(2, 5, 32), (2, 5, 32), (2, 5, 48)]
    whole = lrpgraph.explain(
        model, {"input_ids": ids}, target=7, rules="attnlrp", conditions={points[2]: [halves[0] + halves[1]]}
    )
    torch.testing.assert_close(
        ex.conditional["input_ids"].sum(0), whole.conditional["input_ids"][0], rtol=1e-10, atol=1e-14
    )
    # the MLP's neurons are not everything: relevance also bypasses them along the residual stream
    assert (whole.conditional["input_ids"][0] - ex.relevance["input_ids"]).abs().max() > 1e-3
    head = torch.zeros(5, 32, dtype=torch.float64)
    head[:, 8:16] = 1  # the second head's 8 dims, at every position
    by_head = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules="attnlrp", conditions={points[1]: [head]})
    assert by_head.conditional["input_ids"].shape == (1, 2, 5)
    node = lrpgraph.trace(model, {"input_ids": ids}).module_output("model.layers.0.mlp")
    by_name = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules="attnlrp", record=[node.name])
    mlp = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules="attnlrp", record=["model.layers.0.mlp"])
    assert torch.equal(by_name.latent[node.name], mlp.latent["model.layers.0.mlp"])


def _no_walk(*args, **kwargs):
    raise AssertionError("a walk ran before the arguments were checked")


def test_bad_points_and_conditions_are_errors_before_any_walk(monkeypatch):
    model, x = relu_mlp(), torch.randn(2, 6, dtype=torch.float64)
    monkeypatch.setattr(Walker, "run", _no_walk)
    with pytest.raises(lrpgraph.InputError, match=r"'4x' is not a point .*did you mean '4'"):
        lrpgraph.explain(model, x, target=1, record=["4x"])
    with pytest.raises(lrpgraph.InputError, match=r"unit indices \[12\] out of range: the point has 12 units"):
        lrpgraph.explain(model, x, target=1, conditions={"0": [[12]]})
    with pytest.raises(lrpgraph.InputError, match="same number of conditions"):
        lrpgraph.explain(model, x, target=1, conditions={"0": [[1]], "2": [[1], [2]]})
    with pytest.raises(lrpgraph.InputError, match="one target at a time"):
        lrpgraph.explain(model, x, target=lrpgraph.Targets([1, 2]), conditions={"0": [[1]]})
    with pytest.raises(lrpgraph.InputError, match="does not broadcast"):
        lrpgraph.explain(model, x, target=1, conditions={"0": [torch.ones(5, dtype=torch.float64)]})
    with pytest.raises(lrpgraph.InputError, match="non-empty list of conditions"):
        lrpgraph.explain(model, x, target=1, conditions={"0": []})


def test_rho_at_recorded_points_is_the_modified_gradient(tmp_path):
    """On a bias-free ReLU network with LRP-0, ρ is the plain gradient — at inactive units (a = 0) too, where R/a
    would not say; and R = a ⊙ ρ."""
    model, x = relu_mlp(), torch.randn(3, 6, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=1, rules=LRP0, record=["0", "1"], rho=True)
    h = x.detach().requires_grad_()
    pre = model[0](h)
    post = model[1](pre)
    out = model[2:](post)
    grad_pre, grad_post = torch.autograd.grad(out[:, 1].sum(), [pre, post])
    torch.testing.assert_close(ex.rho["0"], grad_pre, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ex.rho["1"], grad_post, rtol=1e-12, atol=1e-14)
    assert bool((post == 0).any()) and ex.rho["1"][post == 0].abs().max() > 0
    torch.testing.assert_close(ex.latent["1"], post.detach() * ex.rho["1"], rtol=1e-12, atol=1e-14)
    again = lrpgraph.load(ex.save(tmp_path / "rho.safetensors"))
    assert torch.equal(again.rho["1"], ex.rho["1"])
    with pytest.raises(lrpgraph.InputError, match="pass record= as well"):
        lrpgraph.explain(model, x, target=1, rho=True)


def test_reference_examples_rank_inputs_per_unit_and_resume(tmp_path, monkeypatch):
    """RelMax and ActMax against each input's own explain and activation; the heatmaps are `explain` with the unit as
    a condition; a rerun on the written folder recomputes nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.Conv2d(6, 5, 3, bias=False), nn.ReLU(), nn.Flatten(),
        nn.Linear(5 * 4 * 4, 3, bias=False),
    ).double().eval()  # fmt: skip
    images = [torch.randn(3, 8, 8, dtype=torch.float64) * (1 + i % 3) for i in range(7)]
    found = lrpgraph.reference_examples(
        model, images, "2", target=1, rules=LRP0, units=[0, 3], top=3, path=tmp_path, batch_size=2
    )
    explained = [lrpgraph.explain(model, x[None], 1, LRP0, record=["2"]).latent["2"][0] for x in images]
    relevance = torch.stack([r.sum((1, 2)) for r in explained])
    with torch.no_grad():
        activation = torch.stack([model[:3](x[None])[0].amax((1, 2)) for x in images])
    torch.testing.assert_close(found.relevance, relevance, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(found.activation, activation, rtol=1e-12, atol=1e-14)
    for u in (0, 3):
        assert found.relmax[u] == relevance[:, u].topk(3).indices.tolist()
        assert found.actmax[u] == activation[:, u].topk(3).indices.tolist()
        for i in {*found.relmax[u], *found.actmax[u]}:
            alone = lrpgraph.explain(model, images[i][None], 1, LRP0, conditions={"2": [[u]]})
            torch.testing.assert_close(found.heatmaps[u][i], alone.conditional["input"][0, 0], rtol=1e-10, atol=1e-14)
    monkeypatch.setattr(lrpgraph.api.reference, "explain", _no_walk)
    monkeypatch.setattr(lrpgraph.api.reference, "explain_many", _no_walk)
    again = lrpgraph.reference_examples(model, images, "2", target=1, rules=LRP0, units=[0, 3], top=3, path=tmp_path)
    assert again.relmax == found.relmax and again.actmax == found.actmax
    assert all(torch.equal(again.heatmaps[u][i], t) for u, maps in found.heatmaps.items() for i, t in maps.items())
    monkeypatch.undo()  # damaged files are set aside and what they held is computed again, to the same values
    for name in ("scores.safetensors", "heatmaps.safetensors"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:40])
    with pytest.warns(UserWarning, match="cannot be read.*moved to .*damaged") as caught:
        redone = lrpgraph.reference_examples(model, images, "2", 1, LRP0, units=[0, 3], top=3, path=tmp_path)
    assert len(caught) == 2 and sorted(p.name for p in (tmp_path / "damaged").iterdir()) == [
        "heatmaps.safetensors",
        "scores.safetensors",
    ]
    assert redone.relmax == found.relmax and torch.equal(redone.relevance, found.relevance)
    assert all(torch.equal(redone.heatmaps[u][i], t) for u, maps in found.heatmaps.items() for i, t in maps.items())


def test_reference_examples_over_token_inputs_of_different_lengths():
    """Batched and padded by explain_many, each input's unit relevance is its own explain's; heatmaps per token."""
    model = wide_llama()
    point = "model.layers.0.mlp.down_proj:input"
    texts = [{"input_ids": torch.randint(3, 64, (n,))} for n in (4, 6, 5, 6)]
    found = lrpgraph.reference_examples(model, texts, point, target=7, rules="attnlrp", units=[1, 2], top=2)
    alone = [lrpgraph.explain(model, {"input_ids": t["input_ids"][None]}, 7, "attnlrp", record=[point]) for t in texts]
    relevance = torch.stack([ex.latent[point][0].sum(0) for ex in alone])
    assert (found.relevance - relevance).abs().max() <= 1e-9 * relevance.abs().max()
    for maps in found.heatmaps.values():
        for i, heat in maps.items():
            assert heat.shape == (texts[i]["input_ids"].shape[0],)
