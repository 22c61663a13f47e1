"""A selective scan's loop over tokens is traced as one op (`lrpgraph::linear_scan`): one trace serves every
length, and the relevance is the one the loop traced as written gets, rule for rule."""

import threading

import pytest
import torch
import transformers
import transformers.models.mamba.modeling_mamba as modeling_mamba
from test_mamba_lrp import TIGHT, _tiny

import lrpgraph
from lrpgraph.capture import scans
from lrpgraph.engine import tracers

# transformers 5.25 writes Mamba's scan as a loop over tokens in `mamba_selective_scan`; other releases differ (5.13
# takes torch's associative_scan while tracing): there the model is traced as written
reproduced = pytest.mark.skipif(
    (modeling_mamba, "mamba_selective_scan") not in scans.substitutions(),
    reason=f"transformers {transformers.__version__} does not write Mamba's scan as lrpgraph reproduces it",
)


def _loop(a, b, dim):
    """h_t = a_t·h_{t−1} + b_t, written out."""
    h, states = torch.zeros_like(b.select(dim, 0)), []
    for t in range(b.shape[dim]):
        h = a.select(dim, t) * h + b.select(dim, t)
        states.append(h)
    return torch.stack(states, dim)


def test_the_op_computes_the_recurrence_and_its_gradient():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 7, 4, dtype=torch.float64), torch.randn(2, 3, 7, 4, dtype=torch.float64)
    assert torch.allclose(torch.ops.lrpgraph.linear_scan(a, b, 2), _loop(a, b, 2), rtol=1e-14, atol=0)
    ours = [t.clone().requires_grad_() for t in (a, b)]
    loop = [t.clone().requires_grad_() for t in (a, b)]
    weight = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    (torch.ops.lrpgraph.linear_scan(*ours, 2) * weight).sum().backward()
    (_loop(*loop, 2) * weight).sum().backward()
    for got, expected in zip(ours, loop, strict=True):
        assert torch.allclose(got.grad, expected.grad, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="one shape"):
        torch.ops.lrpgraph.linear_scan(a[:, :1], b, 2)


@pytest.fixture
def exports(monkeypatch):
    original, counted = tracers.export_program, []

    def counting(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tracers, "export_program", counting)
    return counted


def _mamba():
    torch.manual_seed(0)
    model = _tiny("mamba").double().eval()
    for parameter in model.parameters():
        parameter.data += 0.5 * torch.randn_like(parameter)
    return model


@reproduced
def test_one_trace_serves_every_length(exports):
    model = _mamba()
    nodes = []
    for length in (9, 3, 17, 30):
        ex = lrpgraph.explain(model, {"input_ids": torch.randint(0, 64, (1, length))}, target=5, rules="mamba-lrp")
        nodes.append(ex.stats["nodes"])
        assert ex.stats["rules"]["scan:unrolled"] == 2  # one scan per layer
    assert len(exports) == 2 and len(set(nodes[1:])) == 1  # the first call's static trace, then one for all


@reproduced
@pytest.mark.parametrize("rules", ["attnlrp", "mamba-lrp", "cp-lrp"])
def test_same_relevance_as_the_loop_traced_as_written(rules, monkeypatch):
    model, ids = _mamba(), torch.randint(0, 64, (2, 10))
    preset = lrpgraph.preset(rules)
    scan = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules=preset)
    monkeypatch.setattr(scans, "SUBSTITUTED", {})
    twin = _mamba()  # a trace of its own
    loop = lrpgraph.explain(twin, {"input_ids": ids}, target=7, rules=preset)
    assert "scan:unrolled" not in loop.stats["rules"] and "scan:constant-decay" not in loop.stats["rules"]
    assert loop.stats["nodes"] > 2 * scan.stats["nodes"]
    got, expected = scan.relevance["input_ids"], loop.relevance["input_ids"]
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max()))


@reproduced
@pytest.mark.parametrize("rules", ["attnlrp", "mamba-lrp", "cp-lrp"])
def test_verified(rules):
    model, ids = _mamba(), torch.randint(0, 64, (2, 8))
    verification = lrpgraph.verify(model, {"input_ids": ids}, target=3, rules=lrpgraph.preset(rules, **TIGHT))
    assert verification.ok and not verification.unverified, verification


@reproduced
def test_only_a_function_that_agrees_is_replaced_and_it_is_put_back(monkeypatch):
    module = modeling_mamba
    original = module.mamba_selective_scan
    assert (module, "mamba_selective_scan") in scans.substitutions()
    with scans.scans_as_ops():
        assert module.mamba_selective_scan is not original
    assert module.mamba_selective_scan is original

    def rewritten(hidden_states, dt, A, B, C, **kwargs):  # a transformers release that computes something else
        return original(hidden_states, 2 * dt, A, B, C, **kwargs)

    monkeypatch.setattr(module, "mamba_selective_scan", rewritten)
    assert (module, "mamba_selective_scan") not in scans.substitutions()


@reproduced
def test_another_thread_runs_the_model_as_written_while_one_traces(monkeypatch):
    model, ids = _mamba(), torch.randint(0, 64, (1, 5))
    module = modeling_mamba
    seen = {}

    def watching(*args, **kwargs):
        seen[threading.current_thread().name] = True
        return original(*args, **kwargs)

    original = module.mamba_selective_scan
    monkeypatch.setattr(scans, "agrees", lambda fn, replacement: True)
    monkeypatch.setattr(module, "mamba_selective_scan", watching)
    expected = model(ids).logits
    seen.clear()
    with scans.scans_as_ops():
        worker = threading.Thread(target=lambda: seen.setdefault("logits", model(ids).logits), name="other")
        worker.start()
        worker.join()
        model(ids)  # the tracing thread: the replacement
    assert seen.get("other") and threading.current_thread().name not in seen
    assert torch.equal(seen["logits"], expected)


@reproduced
def test_jamba_hybrid_traces_its_scans_as_ops():
    torch.manual_seed(0)
    config = transformers.JambaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
        num_experts=2, num_experts_per_tok=1, mamba_d_state=4, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4,
        use_mamba_kernels=False,
    )  # fmt: skip
    model = transformers.JambaForCausalLM(config).double().eval()
    ids = torch.randint(0, 64, (1, 7))
    ex = lrpgraph.explain(model, {"input_ids": ids}, target=3, rules="mamba-lrp")
    assert ex.stats["rules"]["scan:unrolled"] == 1
    verification = lrpgraph.verify(model, {"input_ids": ids}, target=3, rules=lrpgraph.preset("mamba-lrp", **TIGHT))
    assert verification.ok, verification


@reproduced
def test_a_trace_with_the_scan_op_is_kept_on_disk(exports, tmp_path):
    ids = torch.randint(0, 64, (1, 9))
    first = lrpgraph.explain(_mamba(), {"input_ids": ids}, target=5, rules="mamba-lrp", cache_dir=tmp_path)
    again = lrpgraph.explain(_mamba(), {"input_ids": ids}, target=5, rules="mamba-lrp", cache_dir=tmp_path)
    assert len(exports) == 1 and again.stats["rules"]["scan:unrolled"] == 2
    assert torch.equal(first.relevance["input_ids"], again.relevance["input_ids"])
