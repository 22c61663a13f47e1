"""Promises: the same relevance with and without a memory budget, with offloading, and for K targets at once."""

import dataclasses
import warnings

import pytest
import torch
import torch.utils._pytree as pytree
import transformers
from models import vgg_like

import lrpgraph
from lrpgraph.api.targets import seeds
from lrpgraph.capture.call import prepare_call
from lrpgraph.engine.traced import shapes_vary, traced
from lrpgraph.propagate.schedule import byte_sizes
from lrpgraph.propagate.store import ActivationStore
from lrpgraph.propagate.walker import Walker
from lrpgraph.tools.zoo import architectures


@pytest.fixture(scope="module")
def llama():
    (arch,) = architectures(["llama"])
    model, inputs = arch.build(batch=2, length=16)
    return model, inputs


@pytest.fixture(scope="module")
def deep_llama():
    """Eight blocks, so that checkpoints between blocks pay off."""
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(3, 96, (2, 32))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def close(a, b):
    scale = b.abs().max().clamp_min(1e-30)
    return float((a - b).abs().max() / scale)


@pytest.mark.parametrize("fraction", [0.5, 0.35])
def test_budget_gives_the_same_relevance_and_is_respected(deep_llama, fraction):
    model, inputs = deep_llama
    free = lrpgraph.explain(model, inputs, target=7, rules="attnlrp")
    budget = int(free.stats["peak_activation_bytes"] * fraction)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this budget is feasible: no warning
        tight = lrpgraph.explain(model, inputs, target=7, rules="attnlrp", memory_budget=budget)
    assert close(tight.relevance["input_ids"], free.relevance["input_ids"]) <= 1e-6
    assert tight.stats["checkpoints"] > 0 and tight.stats["recomputed_nodes"] > 0
    model_trace, values = _traced(model, inputs)
    nbytes = byte_sizes(model_trace.shapes(values))
    largest = max(nbytes(n) for n in model_trace.graph.nodes if n.op == "call_function")
    assert tight.stats["peak_activation_bytes"] <= budget + largest
    assert tight.stats["peak_activation_bytes"] < free.stats["peak_activation_bytes"]


def test_too_small_a_budget_warns_and_still_explains(deep_llama):
    model, inputs = deep_llama
    free = lrpgraph.explain(model, inputs, target=7, rules="attnlrp")
    with pytest.warns(UserWarning, match="below what the smallest schedule holds"):
        tight = lrpgraph.explain(model, inputs, target=7, rules="attnlrp", memory_budget=1000)
    assert close(tight.relevance["input_ids"], free.relevance["input_ids"]) <= 1e-6
    assert tight.stats["peak_activation_bytes"] < free.stats["peak_activation_bytes"]


def test_budget_on_a_cnn():
    model = vgg_like(batchnorm=True)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    free = lrpgraph.explain(model, x, target=3, rules="epsilon-plus")
    with pytest.warns(UserWarning):
        tight = lrpgraph.explain(model, x, target=3, rules="epsilon-plus", memory_budget=1)
    assert close(tight.relevance["input"], free.relevance["input"]) <= 1e-12


def test_offload_gives_the_same_relevance(llama):
    model, inputs = llama
    free = lrpgraph.explain(model, inputs, target=7, rules="attnlrp")
    off = lrpgraph.explain(model, inputs, target=7, rules="attnlrp", offload=True)
    assert off.stats["offloaded_bytes"] > 0
    assert close(off.relevance["input_ids"], free.relevance["input_ids"]) <= 1e-6


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_k_targets_in_one_pass_equal_k_calls(llama, rules):
    model, inputs = llama
    targets = [3, 11, 40, 95]
    together = lrpgraph.explain(
        model, inputs, target=lrpgraph.Targets(targets), rules=rules, record=["model.layers.1.mlp"]
    )
    assert together.relevance["input_ids"].shape == (4, *inputs["input_ids"].shape)
    assert together.latent["model.layers.1.mlp"].shape[0] == 4
    for k, t in enumerate(targets):
        alone = lrpgraph.explain(model, inputs, target=t, rules=rules, record=["model.layers.1.mlp"])
        assert close(together.relevance["input_ids"][k], alone.relevance["input_ids"]) <= 1e-5
        assert close(together.latent["model.layers.1.mlp"][k], alone.latent["model.layers.1.mlp"]) <= 1e-5
        torch.testing.assert_close(together.conservation.seed[k], alone.conservation.seed)


@pytest.mark.parametrize("offload", [False, True])
def test_k_maps_split_into_walks_under_a_budget(deep_llama, offload):
    """A budget too small for K maps at once walks them in groups over one forward: the same relevance, latent
    relevance and absorbed totals as one walk, what the forward stored kept for every walk."""
    model, inputs = deep_llama
    targets = lrpgraph.Targets([3, 11, 40, 95, 7])
    whole = lrpgraph.explain(model, inputs, target=targets, rules="attnlrp", record=["model.layers.3"])
    budget = whole.stats["peak_activation_bytes"] + 1
    split = lrpgraph.explain(
        model, inputs, target=targets, rules="attnlrp", record=["model.layers.3"], memory_budget=budget, offload=offload
    )
    assert split.stats["walks"] > 1 and split.stats["maps"] == 5
    assert close(split.relevance["input_ids"], whole.relevance["input_ids"]) <= 1e-6
    assert close(split.latent["model.layers.3"], whole.latent["model.layers.3"]) <= 1e-6
    assert split.conservation.absorbed == pytest.approx(whole.conservation.absorbed, rel=1e-6, abs=1e-6)


def test_k_ids_per_sample_and_mixed_targets():
    model = vgg_like()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ids = torch.tensor([[1, 4], [7, 2]])
    together = lrpgraph.explain(model, x, target=ids, rules="epsilon-plus")
    assert together.relevance["input"].shape == (2, 2, 3, 16, 16)
    for k in range(2):
        alone = lrpgraph.explain(model, x, target=ids[:, k], rules="epsilon-plus")
        assert close(together.relevance["input"][k], alone.relevance["input"]) <= 1e-10
    mixed = lrpgraph.explain(model, x, target=lrpgraph.Targets([3, (1, 5), lambda o: o * 0 + 1.0]), rules="epsilon")
    assert mixed.relevance["input"].shape[0] == 3


class LinearOfTwoBranches(torch.nn.Module):
    """linear(a(x), b(x)): a linear op whose weight is relevant too — the bilinear rule, run per target."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(4, 6)

    def forward(self, x):
        return torch.nn.functional.linear(self.a(x), self.b(x))


def test_k_targets_through_a_bilinear_linear_op():
    torch.manual_seed(0)
    model, x = LinearOfTwoBranches().eval(), torch.randn(3, 4, dtype=torch.float64)
    model.double()
    together = lrpgraph.explain(model, x, target=lrpgraph.Targets([0, 1, 2]), rules="attnlrp")
    assert together.stats["rules"]["matmul:uniform"] == 1
    for k in range(3):
        alone = lrpgraph.explain(model, x, target=k, rules="attnlrp")
        assert close(together.relevance["x"][k], alone.relevance["x"]) <= 1e-10


def _traced(model, inputs):
    """The traced model of a call, traced afresh with symbolic sizes (as every trace but a first call's: transformers
    5.13's static Llama trace leaves no table that several recipes share), and the call's placeholder values."""
    args, kwargs = prepare_call(model, inputs)
    lrpgraph.clear_cache(model)
    with shapes_vary():
        model_trace = traced(model, args, kwargs)
    return model_trace, model_trace.graph.placeholder_values(model, pytree.tree_leaves((args, kwargs)))


def test_each_dropped_activation_is_recomputed_once(llama):
    model, inputs = llama
    model_trace, values = _traced(model, inputs)
    graph = model_trace.graph
    shapes = model_trace.shapes(values)
    plan = model_trace.plan(graph.outputs[0], lrpgraph.preset("attnlrp"), None)
    with pytest.warns(UserWarning):
        schedule = plan.schedule(shapes, 1)
    counts = {}

    class Counting(ActivationStore):
        def _recompute(self, target):
            before = self.recomputed_nodes
            value = super()._recompute(target)
            counts[target] = counts.get(target, 0) + (self.recomputed_nodes > before)
            return value

    placeholders = graph.module.graph.find_nodes(op="placeholder")
    store = Counting(dict(zip(placeholders, values, strict=True)), shapes, schedule.recomputation)
    out = model_trace.forward(schedule.keep).run(values, store)[0]
    seed, _ = seeds(7, out)
    Walker(plan, schedule, store).run(seed)
    assert len(schedule.checkpoints) > 0 and store.recomputed_nodes > 0
    assert counts and max(counts.values()) == 1


def test_a_walk_recomputes_each_shared_value_once_without_a_budget(deep_llama):
    """Recipes share what several of them compute and is small beside their targets (the rotary tables, position
    masks): each such node is computed once per walk, not once per recipe reading it. The relevance is exactly a
    walk's that kept everything."""
    model, inputs = deep_llama
    model_trace, values = _traced(model, inputs)
    graph = model_trace.graph
    shapes = model_trace.shapes(values)
    plan = model_trace.plan(graph.outputs[0], lrpgraph.preset("attnlrp"), None)
    schedule = plan.schedule(shapes)
    recipes = schedule.recomputation
    counts: dict = {}
    made = recipes.program

    def counted(target, held):
        program = made(target, held)

        def run(*args):
            for n in program.nodes:
                counts[n] = counts.get(n, 0) + 1
            return program.run(*args)

        return dataclasses.replace(program, run=run)

    recipes.program = counted
    placeholders = graph.module.graph.find_nodes(op="placeholder")
    store = ActivationStore(dict(zip(placeholders, values, strict=True)), shapes, recipes)
    out = model_trace.forward(schedule.keep).run(values, store)[0]
    seed, _ = seeds(7, out)
    walked = Walker(plan, schedule, store).run(seed)
    in_recipes = {}
    for recipe in schedule.recipes.values():
        for n in recipe:
            in_recipes[n] = in_recipes.get(n, 0) + 1
    # Which values recipes recompute depends on the checkpoints the schedule picks (transformers versions trace the
    # rotary embedding differently); whichever rotary table several recipes read is shared.
    rotary = {
        n
        for n, c in in_recipes.items()
        if c > 1 and n.target in (torch.ops.aten.cos.default, torch.ops.aten.sin.default)
    }
    assert schedule.shared and rotary <= schedule.shared
    assert all(in_recipes[n] > 1 for n in schedule.shared)
    assert all(counts[n] == 1 for n in schedule.shared)
    assert store.recomputed_nodes == sum(counts.values())
    assert store.held_bytes == 0  # every held value, shared ones included, was released after its last reader

    needed = frozenset(r for step in plan.steps.values() for r in step.reads if r.op != "placeholder")
    everything = dataclasses.replace(schedule, keep=needed, recipes={}, shared=frozenset(), programs={})
    full = ActivationStore(dict(zip(placeholders, values, strict=True)), shapes)
    model_trace.forward(needed).run(values, full)
    kept = Walker(plan, everything, full).run(seed)
    assert full.recomputed_nodes == 0 and kept.inputs.keys() == walked.inputs.keys()
    for node, r in kept.inputs.items():
        torch.testing.assert_close(walked.inputs[node], r, rtol=0, atol=0)
    assert walked.absorbed == kept.absorbed


def test_bfloat16_model_with_float32_relevance(llama):
    model, inputs = llama
    reference = lrpgraph.explain(model, inputs, target=7, rules="cp-lrp")
    half = model.to(torch.bfloat16)
    try:
        ex = lrpgraph.explain(half, inputs, target=7, rules="cp-lrp", dtype=torch.float32)
        assert ex.relevance["input_ids"].dtype == torch.float32
        assert torch.isfinite(ex.relevance["input_ids"]).all()
        assert close(ex.relevance["input_ids"], reference.relevance["input_ids"]) < 0.1
    finally:
        model.to(torch.float32)


class SelectiveScan(torch.nn.Module):
    """h_t = decay_t · h_{t−1} + x_t W with decay = σ(x V) for all steps at once: an unrolled loop reads one step's
    slice of a value computed for every step (Mamba's discretisation)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
        self.v = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

    def forward(self, x):
        decay = torch.sigmoid(x @ self.v)
        h = x.new_zeros(x.shape[0], 4)
        states = []
        for t in range(x.shape[1]):
            h = decay[:, t] * h + x[:, t] @ self.w
            states.append(h)
        return torch.stack(states, 1)


def test_a_step_of_a_value_computed_for_every_step_is_held_not_recomputed():
    """Recomputing σ(x V) for all T steps to read one step's slice, at each step, is O(T²) work; the walk holds the
    slices instead, so σ runs once (in the forward) however long the loop."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sigmoids(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Sigmoids.calls += func is torch.ops.aten.sigmoid.default
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = SelectiveScan()
    x, seed = torch.randn(2, 48, 3, dtype=torch.float64), torch.randn(2, 48, 4, dtype=torch.float64)
    lrpgraph.explain(model, x, target=seed, rules="attnlrp")  # traced (σ runs in the trace too)
    with Sigmoids():
        lrpgraph.explain(model, x, target=seed, rules="attnlrp")
    assert Sigmoids.calls == 1  # it was 7 at 48 steps when each step's slice was recomputed from σ(x V)
