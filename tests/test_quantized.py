"""Quantized models: weight-only schemes (optimum-quanto int8 / int4, torchao int8 / int4) are explained with the
weights their forward uses, equal to the same model in float with those dequantized weights; the dequantized weights
are recomputed where read, never held; schemes that quantize activations are refused, naming the module."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from models import tiny_llama

import lrpgraph
from lrpgraph.capture.call import prepare_call
from lrpgraph.engine.traced import traced


def _llama():
    return tiny_llama(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2).float()


def _quanto(bits):
    from optimum.quanto import freeze, qint4, qint8, quantize

    def apply(model):
        quantize(model, weights=qint8 if bits == 8 else qint4)
        freeze(model)

    return apply


def _torchao(bits):
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    config = Int8WeightOnlyConfig() if bits == 8 else IntxWeightOnlyConfig(torch.int4, granularity=PerGroup(32))
    return lambda model: quantize_(model, config)


SCHEMES = {
    "quanto-int8": _quanto(8),
    "quanto-int4": _quanto(4),
    "torchao-int8": _torchao(8),
    "torchao-int4": _torchao(4),
}


def _dequantized_twin(float_model, quantized):
    """The float model with each quantized weight replaced by what it dequantizes to (written here, not by lrpgraph)."""
    twin = copy.deepcopy(float_model)
    modules = dict(twin.named_modules())
    count = 0
    for path, module in quantized.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and type(weight) not in (torch.Tensor, torch.nn.Parameter):
            with torch.no_grad():
                modules[path].weight.copy_(weight.dequantize())
            count += 1
    assert count > 0
    return twin


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def quantized_llama(request):
    model = _llama()
    quantized = copy.deepcopy(model)
    SCHEMES[request.param](quantized)
    return quantized, _dequantized_twin(model, quantized)


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp", "epsilon"])
def test_quantized_equals_float_with_dequantized_weights(quantized_llama, rules):
    quantized, twin = quantized_llama
    ids = torch.tensor([[5, 17, 3, 60, 9, 41, 22]])
    ours, theirs = lrpgraph.explain(quantized, ids, rules=rules), lrpgraph.explain(twin, ids, rules=rules)
    assert torch.allclose(ours.output, quantized(ids).logits, atol=1e-6)
    r, expected = ours.relevance["input_ids"].double(), theirs.relevance["input_ids"].double()
    assert float((r - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert float(r.sum()) == pytest.approx(float(theirs.relevance["input_ids"].sum()), rel=1e-5)


def test_quantized_explanations_are_verified(quantized_llama):
    quantized, _ = quantized_llama
    verified = lrpgraph.verify(quantized, torch.tensor([[5, 17, 3, 60, 9]]), rules="attnlrp")
    assert verified.ok and verified.max_error < 1e-4 and not verified.unverified


def test_dequantized_weights_are_recomputed_where_read_never_held(quantized_llama):
    """Each linear layer's dequantized weight is computed from the model's state alone: the schedule recomputes it
    for the rule that reads it (one layer's float weight at a time), and the forward holds none of them."""
    quantized, _ = quantized_llama
    args, kwargs = prepare_call(quantized, {"input_ids": torch.tensor([[5, 17, 3, 60, 9]])})
    model_trace = traced(quantized, args, kwargs)
    graph = model_trace.graph
    values = graph.placeholder_values(quantized, pytree.tree_leaves((args, kwargs)))
    plan = model_trace.plan(graph.outputs[0], lrpgraph.preset("attnlrp"), None)
    schedule = plan.schedule(model_trace.shapes(values))
    weights = [n.args[1] for n in graph.nodes if n.target is torch.ops.aten.linear.default]
    assert len(weights) == 2 * 7 + 1  # q, k, v, o, gate, up, down per block, and the head
    assert all(w.op == "call_function" for w in weights)  # each computed from the stored tensors, none a placeholder
    assert not set(weights) & schedule.keep
    assert all(w in schedule.recipes for w in weights)


def test_quantized_convolutions():
    """optimum-quanto quantizes Conv2d weights too: the same relevance as the float network with dequantized weights."""
    from models import vgg_like

    model = vgg_like(dtype=torch.float32).eval()
    quantized = copy.deepcopy(model)
    _quanto(8)(quantized)
    twin = _dequantized_twin(model, quantized)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = lrpgraph.explain(quantized, x, target=1, rules="epsilon-plus")
    theirs = lrpgraph.explain(twin, x, target=1, rules="epsilon-plus")
    r, expected = ours.relevance["input"].double(), theirs.relevance["input"].double()
    assert float((r - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_the_quantized_model_is_unchanged():
    quantized = _llama()
    SCHEMES["torchao-int8"](quantized)
    before = {name: (p, type(p), p.dequantize().clone()) for name, p in quantized.named_parameters()}
    modules = {name: type(m) for name, m in quantized.named_modules()}
    lrpgraph.explain(quantized, torch.tensor([[1, 2, 3, 4]]))
    assert {name: type(m) for name, m in quantized.named_modules()} == modules
    for name, p in quantized.named_parameters():
        assert p is before[name][0] and type(p) is before[name][1] and torch.equal(p.dequantize(), before[name][2])


def test_transformers_quantization_configs(tmp_path):
    """Models loaded with transformers' QuantoConfig and TorchAoConfig explain as the float model with their
    dequantized weights, traced once for calls of every length (no warning that a call is traced again)."""
    import transformers
    from torchao.quantization import Int8WeightOnlyConfig

    model = _llama()
    model.save_pretrained(tmp_path)
    calls = (torch.tensor([[5, 17, 3, 60, 9]]), torch.tensor([[8, 1, 44, 2, 30, 7]]))
    for config in (transformers.QuantoConfig(weights="int8"), transformers.TorchAoConfig(Int8WeightOnlyConfig())):
        quantized = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path, quantization_config=config, dtype=torch.float32
        ).eval()
        twin = _dequantized_twin(model, quantized)
        for ids in calls:
            with _no_warning():
                ours = lrpgraph.explain(quantized, ids, rules="attnlrp").relevance["input_ids"]
            expected = lrpgraph.explain(twin, ids, rules="attnlrp").relevance["input_ids"]
            assert float((ours - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


class _no_warning:
    def __enter__(self):
        import warnings

        self.catch = warnings.catch_warnings(record=True)
        self.caught = self.catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.catch.__exit__(*exc)
        mine = [w for w in self.caught if "lrpgraph" in str(w.filename) or "traced" in str(w.message)]
        assert not mine, [str(w.message) for w in mine]


def _torch_ao_dynamic(model, **options):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors
        return torch.ao.quantization.quantize_dynamic(model, **options)


@pytest.mark.parametrize(
    "options",
    [
        {"qconfig_spec": {torch.nn.Linear}, "dtype": torch.qint8},
        {"qconfig_spec": {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}},
        {"qconfig_spec": {torch.nn.Linear}, "dtype": torch.float16},
    ],
    ids=["int8", "int8-per-channel", "float16"],
)
def test_torch_ao_dynamic_quantization_is_explained_with_its_dequantized_weights(options):
    """torch.ao's packed dynamic layers are traced as float layers of their dequantized weights (said once): the same
    relevance as the float model with those weights, the model itself untouched."""
    model = _llama()
    quantized = _torch_ao_dynamic(copy.deepcopy(model), **options)
    twin, modules = copy.deepcopy(model), {}
    for path, module in quantized.named_modules():
        if type(module).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear":
            modules[path] = type(module)
            with torch.no_grad():  # what the layer's weight stands for, by torch's own dequantize
                weight = module.weight()
                dict(twin.named_modules())[path].weight.copy_(weight.dequantize() if weight.is_quantized else weight)
    assert len(modules) == 2 * 7 + 1
    ids = torch.tensor([[5, 17, 3, 60, 9, 41]])
    with pytest.warns(UserWarning, match="explained as float layers of their dequantized weights"):
        first = lrpgraph.explain(quantized, ids, rules="attnlrp")
    with _no_warning():
        again = lrpgraph.explain(quantized, ids, rules="attnlrp")
    expected = lrpgraph.explain(twin, ids, rules="attnlrp").relevance["input_ids"]
    for ex in (first, again):
        assert float((ex.relevance["input_ids"] - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
    assert {path: type(m) for path, m in quantized.named_modules() if path in modules} == modules
    assert lrpgraph.verify(quantized, ids, rules="attnlrp").ok


def _torch_ao_static(model):
    from torch.ao.quantization import DeQuantStub, QuantStub, convert, get_default_qconfig, prepare

    model = torch.nn.Sequential(QuantStub(), torch.nn.Linear(8, 4), torch.nn.ReLU(), DeQuantStub()).eval()
    model.qconfig = get_default_qconfig("x86")
    prepare(model, inplace=True)
    model(torch.randn(16, 8))
    return convert(model, inplace=True)


def _torchao_dynamic(model):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def _quanto_activations(model):
    from optimum.quanto import Calibration, freeze, qint8, quantize

    quantize(model, weights=qint8, activations=qint8)
    with Calibration():
        model(torch.tensor([[1, 2, 3]]))
    freeze(model)
    return model


IDS = torch.tensor([[1, 2, 3]])


@pytest.mark.parametrize(
    ("quantize", "inputs", "module", "says"),
    [
        (_torch_ao_static, torch.randn(2, 8), "'0' (torch.ao.nn.quantized.modules.Quantize)", "static `convert`"),
        (lambda m: _torchao_dynamic(_llama()), IDS, "'model.layers.0.self_attn.q_proj'", "act_quant_kwargs"),
        (lambda m: _quanto_activations(_llama()), IDS, "'model.layers.0.self_attn.q_proj'", "activations=qint8"),
    ],
    ids=["torch.ao-static", "torchao-dynamic-activation", "quanto-activations"],
)
def test_activation_quantization_is_refused_naming_the_module(quantize, inputs, module, says):
    model = quantize(None)
    with pytest.raises(lrpgraph.TraceError) as caught:
        lrpgraph.explain(model, inputs, target=0)
    message = str(caught.value)
    assert f"module {module}" in message and says in message and "weight-only" in message


def test_a_kernel_that_differs_from_its_dequantization_is_refused():
    """A weight subclass whose linear kernel rounds its input (an unknown scheme): refused, not explained as the
    float layer it is not."""
    from torch.utils._pytree import tree_map_only

    class RoundingWeight(torch.Tensor):
        @staticmethod
        def __new__(cls, data):
            return torch.Tensor._make_wrapper_subclass(cls, data.shape, dtype=data.dtype, device=data.device)

        def __init__(self, data):
            self._data = data

        def __tensor_flatten__(self):
            return ["_data"], None

        @staticmethod
        def __tensor_unflatten__(inner, meta, size, stride):
            return RoundingWeight(inner["_data"])

        def dequantize(self):
            return self._data

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.linear:
                x = torch.round(args[0] * 4) / 4  # the hidden input transform
                return F.linear(x, args[1]._data, *args[2:], **kwargs)
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            out = func(*tree_map_only(RoundingWeight, lambda t: t._data, args), **(kwargs or {}))
            return RoundingWeight(out) if func is torch.ops.aten.detach.default else out

    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    model[0].weight = torch.nn.Parameter(RoundingWeight(model[0].weight.detach()), requires_grad=False)
    with pytest.raises(lrpgraph.TraceError, match="module '0' computes a linear layer that differs"):
        lrpgraph.explain(model, torch.randn(1, 8), target=0)
