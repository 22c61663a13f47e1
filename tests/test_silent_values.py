"""No silent NaN, no silent zeros: relevance that stops being finite is an error naming the node where it first does
so (and whether the model's own value there is finite), and an input relevance cannot reach is listed in
`ex.unreached` with why, not given zeros that were never computed."""

import pytest
import torch

import lrpgraph
from lrpgraph.errors import InputError


def _dead_layer():
    """A first layer of zeros: its output z = 0 everywhere, which LRP-0 (epsilon=0) divides by."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
        model[2].bias.fill_(1.0)
    return model


LRP0 = lrpgraph.preset("epsilon", epsilon=0.0)
WHERE = (
    r"it first becomes so at node 'linear' \(aten.linear.default\) in module '0' \(torch.nn.modules.linear.Linear\), "
    r"rule 'linear:epsilon'; the model's value is finite, so the rule divides by zero"
)


@pytest.mark.parametrize("target", [0, lrpgraph.Targets([0, 1])], ids=["one map", "K maps"])
def test_a_rule_dividing_by_zero_is_named(target):
    model, x = _dead_layer(), torch.randn(2, 4, dtype=torch.float64)
    assert torch.isfinite(model(x)).all()
    with pytest.raises(InputError, match=f"relevance reaching input 'input' contains NaN or infinite values: {WHERE}"):
        lrpgraph.explain(model, x, target=target, rules=LRP0)
    with pytest.warns(UserWarning, match=WHERE):
        ex = lrpgraph.explain(model, x, target=target, rules=LRP0, strict=False)
    assert ex.relevance["input"].isnan().all()
    assert torch.isfinite(lrpgraph.explain(model, x, target=target, rules="epsilon").relevance["input"]).all()


def test_nan_the_model_computes_is_named_as_the_models():
    """Causal mask and padding leave a query no key: the attention row is NaN in the model itself."""

    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x, mask, padding):
            a, _ = self.attention(x, x, x, attn_mask=mask, key_padding_mask=padding)
            return self.head(a[:, -1])

    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inputs = {
        "x": x,
        "mask": torch.ones(5, 5, dtype=torch.bool).triu(1),
        "padding": torch.tensor([[False] * 5, [True] * 2 + [False] * 3]),
    }
    with pytest.raises(InputError, match=r"in module 'attention' .*the model's value is not finite either"):
        lrpgraph.explain(Attend().double().eval(), inputs, target=1, rules="attnlrp")


class MessagePassing(torch.nn.Module):
    """Node features x [N, F]; edges [2, E] as indices: gather the sources, add into the targets."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.out = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 2, bias=False)

    def forward(self, x, edge_index):
        messages = self.lin(x).index_select(0, edge_index[0])
        return self.out(torch.relu(torch.zeros_like(x).index_add(0, edge_index[1], messages)).sum(0, keepdim=True))


def test_integer_indices_are_unreached_not_zero(tmp_path):
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    inputs = {"x": x, "edge_index": torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])}
    ex = lrpgraph.explain(MessagePassing().double().eval(), inputs, target=0, rules=LRP0)
    assert set(ex.relevance) == {"x"}
    assert ex.unreached == {
        "edge_index": "an integer input read only as indices or counts (aten.index_add.default, "
        "aten.index_select.default): relevance does not flow into them"
    }
    # bias-free linear maps, a ReLU and sums of gathered rows: all of the logit reaches x but what the sum and scatter
    # rules' stabilisers keep (booked: inputs + absorbed = seed exactly)
    seed, absorbed = float(ex.seed.sum()), sum(ex.conservation.absorbed.values())
    assert float(ex.relevance["x"].sum()) + absorbed == pytest.approx(seed, rel=1e-12)
    assert float(ex.relevance["x"].sum()) == pytest.approx(seed, rel=1e-5)
    assert "unreached=['edge_index']" in repr(ex)
    assert lrpgraph.load(ex.save(tmp_path / "ex.safetensors")).unreached == ex.unreached
