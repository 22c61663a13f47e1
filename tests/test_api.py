"""The public API: input and target forms, output choice, batching, caching, and bad input."""

import pytest
import torch
from guard import assert_unchanged, snapshot
from models import mlp, vgg_like
from torch import nn

import lrpgraph
from lrpgraph.engine import tracers


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3).double()
        self.b = nn.Linear(2, 3).double()

    def forward(self, left, right=None):
        return {"logits": self.a(left) + self.b(right), "hidden": torch.relu(self.a(left))}


def test_input_forms_tensor_tuple_dict():
    model = TwoInputs()
    left, right = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    by_tuple = lrpgraph.explain(model, (left, right), target=1)
    by_dict = lrpgraph.explain(model, {"left": left, "right": right}, target=1)
    assert set(by_tuple.relevance) == {"left", "right"}
    for name in ("left", "right"):
        torch.testing.assert_close(by_tuple.relevance[name], by_dict.relevance[name])
    single = lrpgraph.explain(mlp(), torch.randn(2, 6, dtype=torch.float64), target=0)
    assert set(single.relevance) == {"input"}


def test_output_by_name_and_error_for_unknown():
    model = TwoInputs()
    inputs = {"left": torch.randn(2, 4, dtype=torch.float64), "right": torch.randn(2, 2, dtype=torch.float64)}
    ex = lrpgraph.explain(model, inputs, target=0, output="hidden")
    assert ex.output.shape == (2, 3)
    assert ex.relevance["right"].abs().sum() == 0  # 'hidden' does not depend on right
    with pytest.raises(lrpgraph.InputError, match="logits, hidden"):
        lrpgraph.explain(model, inputs, target=0, output="nope")


class WeightsFirst(nn.Module):
    """A detector's shape of outputs: reference points made from the weights alone (per sample: their batch size is
    the input's), then the input's features."""

    def __init__(self):
        super().__init__()
        self.points = nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
        self.weight = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))

    def forward(self, x):
        return {"points": self.points.sigmoid().expand(x.shape[0], -1, -1), "features": x @ self.weight}


def test_default_output_is_the_first_computed_from_the_inputs():
    model, x = WeightsFirst(), torch.randn(2, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=1)
    torch.testing.assert_close(ex.output, x @ model.weight)
    # the ε-rule of a product without bias: x·w, up to the stabiliser's ε
    torch.testing.assert_close(ex.relevance["x"], x * model.weight[:, 1], rtol=1e-4, atol=0)


def test_target_forms_agree():
    model = mlp()
    x = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    ids = torch.tensor([2, 0, 3])
    by_ids = lrpgraph.explain(model, x, target=ids).relevance["input"]
    seed = torch.zeros_like(out)
    seed[torch.arange(3), ids] = out[torch.arange(3), ids]
    by_seed = lrpgraph.explain(model, x, target=seed).relevance["input"]
    by_fn = lrpgraph.explain(model, x, target=lambda o: o * (seed != 0)).relevance["input"]
    torch.testing.assert_close(by_ids, by_seed)
    torch.testing.assert_close(by_ids, by_fn)
    one = lrpgraph.explain(model, x, target=(1, 0)).relevance["input"]
    torch.testing.assert_close(one[1], by_ids[1])
    assert one[0].abs().sum() == 0 and one[2].abs().sum() == 0


def test_default_target_is_the_predicted_class():
    model = mlp()
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    torch.testing.assert_close(
        lrpgraph.explain(model, x).relevance["input"], lrpgraph.explain(model, x, target=predicted).relevance["input"]
    )


def test_batch_equals_separate_calls():
    model = vgg_like()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    batch = lrpgraph.explain(model, x, target=torch.tensor([1, 2, 3]), rules="epsilon-plus")
    for i in range(3):
        alone = lrpgraph.explain(model, x[i : i + 1], target=i + 1, rules="epsilon-plus")
        torch.testing.assert_close(batch.relevance["input"][i : i + 1], alone.relevance["input"])


def test_graph_is_cached_per_call_structure(monkeypatch):
    model = mlp()
    calls = []
    original = tracers.export_program
    monkeypatch.setattr(tracers, "export_program", lambda *a: calls.append(1) or original(*a))
    lrpgraph.explain(model, torch.randn(2, 6, dtype=torch.float64), target=0)
    lrpgraph.explain(model, torch.randn(2, 6, dtype=torch.float64), target=1, rules="epsilon-plus-flat")
    assert len(calls) == 1
    lrpgraph.explain(model, torch.randn(5, 6, dtype=torch.float64), target=1)
    lrpgraph.explain(model, torch.randn(3, 6, dtype=torch.float64), target=1)
    assert len(calls) == 2  # the first trace static; at another batch size one dynamic trace serves every size
    lrpgraph.explain(model, {"input": torch.randn(5, 6, dtype=torch.float64)}, target=1)
    assert len(calls) == 3  # a keyword input is another call structure


def test_cached_graph_sees_updated_weights():
    model = mlp()
    x = torch.randn(2, 6, dtype=torch.float64)
    before = lrpgraph.explain(model, x, target=0).relevance["input"]
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    after = lrpgraph.explain(model, x, target=0).relevance["input"]
    assert not torch.allclose(before, after)


def test_no_autograd_is_used(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("autograd was called")

    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    model = vgg_like(batchnorm=True)
    ex = lrpgraph.explain(model, torch.randn(1, 3, 16, 16, dtype=torch.float64), target=0)
    assert torch.isfinite(ex.relevance["input"]).all()
    assert not ex.relevance["input"].requires_grad


def test_relevance_tensors_are_ordinary_tensors():
    ex = lrpgraph.explain(mlp(), torch.randn(2, 6, dtype=torch.float64), target=0)
    assert not ex.relevance["input"].is_inference()
    (ex.relevance["input"] * torch.ones(1, requires_grad=True, dtype=torch.float64)).sum().backward()


def test_trace_tells_placeholders_and_modules_apart():
    graph = lrpgraph.trace(vgg_like(), torch.randn(1, 3, 16, 16, dtype=torch.float64))
    kinds = set(graph.kinds.values())
    assert {"input", "parameter"} <= kinds
    assert list(graph.input_names.values()) == ["input"]
    convs = [n for n in graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert [graph.module_path(n) for n in convs] == ["0", "2", "5"]
    assert graph.module_type(convs[0]) == "torch.nn.modules.conv.Conv2d"


# --- bad input: clear errors, model untouched -------------------------------------------------


class WithHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = vgg_like(batchnorm=True)
        self.net[0].register_forward_hook(lambda m, i, o: None)
        self.net.train()
        self.net[3].eval()
        self.net[0].weight.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


def _fresh():
    model = WithHooks()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    model.net[-1].weight.grad = torch.ones_like(model.net[-1].weight)
    return model, x


def test_model_unchanged_after_a_good_call():
    model, x = _fresh()
    before = snapshot(model)
    ex = lrpgraph.explain(model, x, target=1, rules=lrpgraph.preset("epsilon-gamma-box", low=-3.0, high=3.0))
    assert torch.isfinite(ex.relevance["x"]).all()
    assert_unchanged(before, model)
    assert model.net[0].weight.grad is None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"target": 10}, lrpgraph.TargetError, "out of range"),
        ({"target": torch.tensor([1, 2, 3])}, lrpgraph.TargetError, "batch of 2"),
        ({"target": (0, 12)}, lrpgraph.TargetError, "out of range"),
        ({"target": (0,)}, lrpgraph.TargetError, "2 ints"),
        ({"target": lambda o: o.sum()}, lrpgraph.TargetError, "shaped like the output"),
        ({"target": 1, "rules": "no-such-preset"}, lrpgraph.RuleSetError, "unknown preset"),
        ({"target": 1, "rules": {"rules": {"conv": "sparkle"}}}, lrpgraph.RuleSetError, "unknown rule 'sparkle'"),
        ({"target": 1, "rules": {"rules": {"convolution": "epsilon"}}}, lrpgraph.RuleSetError, "op class"),
        ({"target": 1, "rules": {"params": {"gama": 0.3}}}, lrpgraph.RuleSetError, "unknown parameter"),
        ({"target": 1, "output": "pooled"}, lrpgraph.InputError, "no floating-point output"),
        ({"target": 1, "record": ["net.99"]}, lrpgraph.InputError, "not a point of the traced model"),
        ({"target": 1, "fallback": "magic"}, ValueError, "fallback"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(kwargs, error, match):
    model, x = _fresh()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        lrpgraph.explain(model, x, **kwargs)
    assert_unchanged(before, model)


def test_inputs_the_model_cannot_take():
    model, _ = _fresh()
    before = snapshot(model)
    with pytest.raises(lrpgraph.TraceError) as info:
        lrpgraph.explain(model, torch.randn(2, 5, 16, 16, dtype=torch.float64), target=1)
    message = str(info.value)
    assert "in module 'net.0' (Conv2d)" in message
    assert len(message.splitlines()) <= 5
    assert_unchanged(before, model)
    with pytest.raises(lrpgraph.InputError, match="tensor, a tuple"):
        lrpgraph.explain(model, "not a tensor", target=1)
    assert_unchanged(before, model)


class Inverse(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3).double()

    def forward(self, x):
        return self.proj(torch.linalg.inv(x)).sum(-1)


def test_op_without_rule_names_op_node_and_module():
    model = Inverse()
    x = torch.randn(2, 3, 3, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(lrpgraph.MissingRuleError) as info:
        lrpgraph.explain(model, x, target=torch.ones(2, 3, dtype=torch.float64))
    message = str(info.value)
    assert "aten.linalg_inv.default" in message and "module '<model>'" in message and "fallback=" in message
    assert_unchanged(before, model)


def test_explicit_fallback_is_reported():
    model = Inverse()
    x = torch.randn(2, 3, 3, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=torch.ones(2, 3, dtype=torch.float64), fallback="absorb")
    assert [f["op"] for f in ex.fallbacks] == ["aten.linalg_inv.default"]
    assert ex.relevance["x"].abs().sum() == 0
    assert ex.conservation.absorbed["fallback"] != 0
