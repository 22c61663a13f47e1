"""lrpgraph's presets as inseq attribution methods: inseq's matrix for a generation equals explain_generation's."""

import pytest
import torch
import transformers

import lrpgraph

inseq = pytest.importorskip("inseq")
from lrpgraph.integrations.inseq import register  # noqa: E402

METHODS = register()


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer without special tokens (inseq checks that a generation starts with its
    prompt's text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "<pad>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"] + [f"w{i}" for i in range(54)]
    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=inner, unk_token="<unk>", pad_token="<pad>", eos_token="<pad>", bos_token="<pad>"
    )


@pytest.mark.parametrize("rules", ["attnlrp", "cp-lrp"])
def test_inseq_attribution_equals_explain_generation(rules):
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=1, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    assert f"lrpgraph-{rules}" in METHODS and f"lrpgraph-{rules}" in inseq.list_feature_attribution_methods()
    attributed = inseq.load_model(model, f"lrpgraph-{rules}", tokenizer=tokenizer)
    out = attributed.attribute("the cat sat", generation_args={"max_new_tokens": 3, "do_sample": False},
                               show_progress=False)  # fmt: skip
    matrix = out.sequence_attributions[0].target_attributions[..., 0]  # [prefix + generated, steps], NaN ahead
    gen = lrpgraph.explain_generation(model, tokenizer, "the cat sat", max_new_tokens=3, rules=rules)
    assert [t.token for t in out.sequence_attributions[0].target][3:] == gen.generated_tokens
    for step in range(3):
        seen = 3 + step
        torch.testing.assert_close(matrix[:seen, step], gen.relevance[step, :seen].float(), rtol=1e-5, atol=1e-7)
    assert out.aggregate().sequence_attributions[0].target_attributions.shape[1] == 3
