"""BiLRP (`explain_similarity`) against oracles: the closed form of a linear pooled model, the Hessian × product of a
bias-free ReLU network (float64), conservation, the two ways of computing the maps, today's first-order rows."""

import pytest
import torch
import transformers
from lrpgraph.seeds import cosine_similarity
from torch import nn

import lrpgraph
from lrpgraph.api.similarity_result import SimilarityExplanation
from lrpgraph.engine.walks import Walks
from lrpgraph.propagate.transposed import TransposedWalker

LRP0 = lrpgraph.preset("epsilon", epsilon=1e-30)  # gradient × input on bias-free ReLU nets (with 0/0 → 0)
BUDGET = 1 << 40  # any memory budget walks the D seeds of each side instead of transposing


class Linear(nn.Module):
    """Token states W x_t; embedded by the mean over the attention mask (the default pooling)."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(features, hidden, bias=False, dtype=torch.float64)

    def forward(self, x, attention_mask):
        return self.proj(x)


class ReluMixer(nn.Module):
    """A bias-free ReLU network whose tokens interact (a fixed mixing matrix over positions): piecewise linear."""

    def __init__(self, tokens: int, features: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(features, hidden, bias=False, dtype=torch.float64)
        self.down = nn.Linear(hidden, hidden, bias=False, dtype=torch.float64)
        self.register_buffer("mix", torch.randn(tokens, tokens, dtype=torch.float64))

    def forward(self, x):
        h = torch.relu(self.up(x))
        h = torch.relu(torch.einsum("st,bth->bsh", self.mix, h))
        return self.down(h)


def mean_of_tokens(out, inputs):
    return out.mean(1)


@pytest.mark.parametrize("budget", [None, BUDGET])
@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_linear_pooled_model_has_the_closed_form(kind, budget):
    """R_ij = Σ_m (W a_i)_m (W b_j)_m / (n_a n_b) over real tokens (÷ |φa||φb| for the cosine); padding gets none."""
    model = Linear(6, 8).eval()
    a, b = torch.randn(2, 5, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    mask_a, mask_b = torch.ones(2, 5, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)
    mask_a[1, 3:] = 0
    sim = lrpgraph.explain_similarity(
        model,
        {"x": a, "attention_mask": mask_a},
        {"x": b, "attention_mask": mask_b},
        similarity=kind,
        rules=LRP0,
        memory_budget=budget,
    )
    assert sim.stats["a"]["route"] == ("transposed" if budget is None else "seeds")
    W = model.proj.weight.detach()
    for p in range(2):
        za = (a[p] @ W.T) * mask_a[p, :, None] / mask_a[p].sum()
        zb = (b[p] @ W.T) * mask_b[p, :, None] / mask_b[p].sum()
        expected = za @ zb.T
        ea, eb = za.sum(0), zb.sum(0)
        if kind == "cosine":
            expected = expected / (ea.norm() * eb.norm())
        torch.testing.assert_close(sim.interactions[p], expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(sim.maps_a[p], za, rtol=1e-12, atol=1e-14)
        assert float(sim.similarity[p]) == pytest.approx(float(expected.sum()), rel=1e-12)
    assert sim.interactions[1, 3:].abs().max() == 0
    assert sim.unreached.abs().max() < 1e-12


def hessian_product(model, a, b, kind):
    """Σ_{k,l} a_ik b_jl ∂²y/∂a_ik∂b_jl for y = ⟨φ(a), φ(b)⟩ (÷ the norms, held constant, for the cosine)."""

    def y(x, z):
        return (model(x[None]).mean(1) * model(z[None]).mean(1)).sum()

    hessian = torch.func.jacrev(torch.func.jacrev(y, argnums=1), argnums=0)(a, b)  # [Tb, F, Ta, F]
    pairs = torch.einsum("ik,jl,jlik->ij", a, b, hessian)
    if kind == "cosine":
        with torch.no_grad():
            pairs = pairs / (model(a[None]).mean(1).norm() * model(b[None]).mean(1).norm())
    return pairs


@pytest.mark.parametrize("budget", [None, BUDGET])
@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_relu_network_equals_the_hessian_product(kind, budget):
    """With LRP-0 each first-order map is gradient × input, so BiLRP is the Hessian × product (Eberle et al.)."""
    model = ReluMixer(4, 5, 8).eval()
    a, b = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    sim = lrpgraph.explain_similarity(
        model, a, b, similarity=kind, embed=mean_of_tokens, rules=LRP0, memory_budget=budget
    )
    for p in range(3):
        oracle = hessian_product(model, a[p], b[p], kind)
        assert (sim.interactions[p] - oracle).abs().max() <= 1e-6 * oracle.abs().max()
        assert (sim.interactions[p] - oracle).abs().max() <= 1e-12


def test_conservation_against_the_first_order_rows():
    """Where both maps conserve: Σ_ij R_ij is the similarity, and the row (column) sums are twice the first-order
    rows of a (b), each side holding half of the similarity."""
    model = ReluMixer(4, 5, 8).eval()
    a, b = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    sim = lrpgraph.explain_similarity(model, a, b, embed=mean_of_tokens, rules=LRP0)
    torch.testing.assert_close(sim.interactions.sum((1, 2)), sim.similarity, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sim.interactions.sum(2), 2 * sim.relevance_a, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sim.interactions.sum(1), 2 * sim.relevance_b, rtol=1e-12, atol=1e-14)
    expected = torch.nn.functional.cosine_similarity(model(a).mean(1), model(b).mean(1), dim=-1)
    torch.testing.assert_close(sim.similarity, expected.detach(), rtol=1e-12, atol=1e-14)


def tiny_encoder(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48
        )
        return transformers.BertModel(config).double().eval()
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
    )
    return transformers.LlamaModel(config).double().eval()


def encoded(ids: torch.Tensor, pad_from: int | None = None) -> dict:
    mask = torch.ones_like(ids)
    if pad_from is not None:
        mask[-1, pad_from:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_transposed_walk_equals_walking_every_dimension(family, rules):
    """The maps of T transposed rows equal the D walks of the embedding's dimensions (float64, 1e-10), padding
    included; and the first-order rows equal `explain` with the cosine seed of both sentences in one batch."""
    model = tiny_encoder(family)
    a = encoded(torch.randint(3, 64, (2, 7)), pad_from=5)
    b = encoded(torch.randint(3, 64, (2, 7)))
    fast = lrpgraph.explain_similarity(model, a, b, rules=rules)
    slow = lrpgraph.explain_similarity(model, a, b, rules=rules, memory_budget=BUDGET)
    assert (fast.stats["a"]["route"], slow.stats["a"]["route"]) == ("transposed", "seeds")
    for side in ("maps_a", "maps_b"):
        x, y = getattr(fast, side), getattr(slow, side)
        assert (x - y).abs().max() <= 1e-10 * y.abs().max()
    assert fast.interactions[1, 5:].abs().max() == 0
    for p in range(2):
        both = {k: torch.stack([a[k][p], b[k][p]]) for k in a}
        ex = lrpgraph.explain(
            model, both, target=cosine_similarity(both["attention_mask"]), rules=rules, output="last_hidden_state"
        )
        for row, first in enumerate((fast.relevance_a[p], fast.relevance_b[p])):
            reference = ex.relevance["input_ids"][row]
            assert (first - reference).abs().max() <= 1e-10 * reference.abs().max()


def test_pairs_rank_and_sign_and_the_file_round_trips(tmp_path):
    model = tiny_encoder("bert")
    a, b = encoded(torch.randint(3, 64, (1, 6))), encoded(torch.randint(3, 64, (1, 5)))
    sim = lrpgraph.explain_similarity(model, a, b)
    top = sim.top_pairs(0, k=3)
    positive = [v for _, _, v in top if v > 0]
    negative = [v for _, _, v in top if v < 0]
    block = sim.interactions[0].double()
    assert positive[0] == pytest.approx(float(block.max())) and negative[0] == pytest.approx(float(block.min()))
    assert positive == sorted(positive, reverse=True) and negative == sorted(negative)
    sim.tokens_a = [[f"a{i}" for i in range(6)]]
    sim.tokens_b = [[f"b{j}" for j in range(5)]]
    again = lrpgraph.load(sim.save(tmp_path / "pairs.safetensors"))
    assert isinstance(again, SimilarityExplanation)
    assert torch.equal(again.interactions, sim.interactions) and torch.equal(again.mask_a, sim.mask_a)
    assert (again.kind, again.rules, again.tokens_b, again.stats) == (sim.kind, sim.rules, sim.tokens_b, sim.stats)
    assert repr(sim).startswith("SimilarityExplanation(1 pair(s), interactions [1, 6, 5] over 'input_ids', cosine")
    assert sim._repr_html_().count("<tr>") == 1 + 6
    page = lrpgraph.viz.similarity_page(sim)
    assert page.count("<tr>") == 1 + 6 and "b4" in page and "a5" in page


def _no_walk(*args, **kwargs):
    raise AssertionError("a walk ran before the arguments were checked")


def test_bad_input_is_an_error_before_any_walk_and_changes_nothing(monkeypatch):
    model = tiny_encoder("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(TransposedWalker, "run_transposed", _no_walk)
    monkeypatch.setattr(Walks, "run", _no_walk)
    a, b = encoded(torch.randint(3, 64, (2, 6))), encoded(torch.randint(3, 64, (3, 6)))
    with pytest.raises(lrpgraph.InputError, match=r"same number of inputs.*a has 2, b has 3"):
        lrpgraph.explain_similarity(model, a, b)
    with pytest.raises(lrpgraph.InputError, match="similarity must be one of cosine, dot"):
        lrpgraph.explain_similarity(model, a, a, similarity="euclid")
    with pytest.raises(lrpgraph.InputError, match="needs the inputs' attention_mask"):
        lrpgraph.explain_similarity(model, {"input_ids": a["input_ids"]}, {"input_ids": a["input_ids"]})
    with pytest.raises(lrpgraph.InputError, match="embed must be linear"):
        lrpgraph.explain_similarity(model, a, a, embed=lambda out, i: torch.nn.functional.normalize(out[:, 0], dim=-1))
    with pytest.raises(lrpgraph.InputError, match=r"embedding must be \[batch, D\]"):
        lrpgraph.explain_similarity(model, a, a, embed=lambda out, i: out)
    with pytest.raises(lrpgraph.InputError, match="embed must be a function"):
        lrpgraph.explain_similarity(model, a, a, embed="cls")
    images = nn.Conv2d(3, 4, 3).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(lrpgraph.InputError, match=r"neither an embedding \[batch, D\] nor token states"):
        lrpgraph.explain_similarity(images, x, x, rules="epsilon")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not model.training


def test_a_rule_that_normalises_walks_every_dimension():
    """absLRP normalises R at every op, so its maps are no matrix to transpose: each dimension is its own walk, equal
    to `explain` seeded with that dimension's share of the embedding."""
    model = Linear(6, 8).eval()
    a = {"x": torch.randn(1, 3, 6, dtype=torch.float64), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    sim = lrpgraph.explain_similarity(model, a, a, rules="abslrp")
    assert sim.stats["a"]["route"] == "seeds"
    for m in (0, 5):
        seed = torch.zeros(1, 3, 8, dtype=torch.float64)
        seed[..., m] = model(**a)[..., m].detach() / 3
        ex = lrpgraph.explain(model, a, target=seed, rules="abslrp")
        torch.testing.assert_close(sim.maps_a[0, :, m], ex.relevance["x"][0].sum(-1), rtol=1e-12, atol=1e-14)
