"""MambaLRP (`rules="mamba-lrp"`) agrees with an independent reference: gradient × input of the model with the
paper's detaches, the scans written from their recurrences (`mambalrp_reference.py`)."""

import pytest
import torch
import transformers
from mambalrp_reference import relevance

import lrpgraph

TIGHT = {"epsilon": 1e-10, "stabilizer": 1e-10}


def _tiny(name: str) -> torch.nn.Module:
    if name == "mamba":
        config = transformers.MambaConfig(
            vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, time_step_rank=4
        )
        return transformers.MambaForCausalLM(config)
    if name == "mamba2":
        config = transformers.Mamba2Config(
            vocab_size=64,
            hidden_size=16,
            state_size=4,
            num_hidden_layers=2,
            expand=2,
            num_heads=8,
            head_dim=4,
            n_groups=2,
            chunk_size=4,
        )
        return transformers.Mamba2ForCausalLM(config)
    if name == "bamba":
        config = transformers.BambaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            attn_layer_indices=[1],
            mamba_n_heads=8,
            mamba_d_head=4,
            mamba_d_state=4,
            mamba_n_groups=2,
            mamba_chunk_size=4,
            mamba_expand=2,
        )
        return transformers.BambaForCausalLM(config)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "bamba"])
def test_agrees_with_gradient_times_input_with_the_selection_detached(name):
    torch.manual_seed(0)
    model = _tiny(name).double().eval()
    for parameter in model.parameters():  # large enough that the scans, not the residual stream, carry the logit
        parameter.data += 0.5 * torch.randn_like(parameter)
    ids = torch.randint(0, 64, (2, 10))  # 10 tokens: chunks of 4 with padding in the chunked form
    ex = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules=lrpgraph.preset("mamba-lrp", **TIGHT))
    expected = relevance(model, ids, 7)
    got = ex.relevance["input_ids"]
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), (got, expected)
    generic = lrpgraph.explain(model, {"input_ids": ids}, target=7, rules=lrpgraph.preset("attnlrp", **TIGHT))
    assert (generic.relevance["input_ids"] - expected).abs().max() > 1e-2 * expected.abs().max()  # tells them apart


def test_a_model_without_scans_gets_attnlrp():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4
    )
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 6))
    mamba = lrpgraph.explain(model, {"input_ids": ids}, target=3, rules="mamba-lrp")
    attn = lrpgraph.explain(model, {"input_ids": ids}, target=3, rules="attnlrp")
    assert torch.equal(mamba.relevance["input_ids"], attn.relevance["input_ids"])


def test_selection_is_a_method_setting():
    assert lrpgraph.preset("mamba-lrp").selection == "constant"
    assert lrpgraph.preset("attnlrp").selection == "relevant"
    with pytest.raises(lrpgraph.RuleSetError, match="selection one of"):
        lrpgraph.RuleSet.from_dict({"rules": {"linear": "epsilon"}, "method": {"selection": "detached"}})
