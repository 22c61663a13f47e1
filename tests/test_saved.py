"""Explanations saved and loaded: safetensors plus a JSON header, every field back, never pickle."""

from __future__ import annotations

import pickle

import pytest
import torch
import transformers

import lrpgraph
from lrpgraph.errors import InputError


def _same(a: lrpgraph.Explanation, b: lrpgraph.Explanation) -> None:
    for field in ("relevance", "latent"):
        x, y = getattr(a, field), getattr(b, field)
        assert list(x) == list(y) and all(torch.equal(x[k], y[k]) for k in x)
    for field in ("output", "seed", "positional", "combined"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or torch.equal(x, y), field
    ca, cb = a.conservation, b.conservation
    assert torch.equal(ca.seed, cb.seed) and ca.absorbed == cb.absorbed
    assert all(torch.equal(ca.inputs[k], cb.inputs[k]) for k in ca.inputs) and list(ca.inputs) == list(cb.inputs)
    assert (ca.positional is None and cb.positional is None) or torch.equal(ca.positional, cb.positional)
    assert a.rules == b.rules and a.fallbacks == b.fallbacks and a.stats == b.stats
    assert ca.where_it_went() == cb.where_it_went()


def test_language_model_round_trip(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 7))
    ex = lrpgraph.explain(model, {"input_ids": ids}, target=5, rules="pa-lrp", record=["model.layers.0"])
    assert ex.positional is not None and ex.latent
    path = ex.save(tmp_path / "lm.safetensors")
    back = lrpgraph.load(path)
    _same(ex, back)
    assert back.relevance["input_ids"].shape == (2, 7)


class _CumProd(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.cumprod(-1))  # cumprod has no rule: an explicit fallback


def test_several_targets_and_fallbacks_round_trip(tmp_path):
    model = _CumProd().eval()
    ex = lrpgraph.explain(model, torch.randn(3, 4), target=lrpgraph.Targets([0, 2]), fallback="pass")
    assert ex.fallbacks and ex.conservation.seed.shape == (2, 3)
    _same(ex, lrpgraph.load(ex.save(tmp_path / "k.safetensors")))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputError, match="is not a safetensors file"):
        lrpgraph.load(bad)
    assert not marker.exists()


def test_load_errors_name_the_problem(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(InputError, match="is not a file"):
        lrpgraph.load(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(InputError, match="holds no lrpgraph explanation"):
        lrpgraph.load(plain)
    future = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(2)}, str(future), metadata={"lrpgraph": '{"format": "lrpgraph.explanation/9"}'})
    with pytest.raises(InputError, match=r"format 'lrpgraph\.explanation/9'"):
        lrpgraph.load(future)
