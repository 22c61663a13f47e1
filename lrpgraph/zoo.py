"""A zoo of HuggingFace architectures built from small configs with random weights (no downloads).

Used by the architecture tests and by `lrpgraph coverage`. Each entry names a transformers config
and model class, the config's size arguments, and the kind of inputs the model takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

TEXT = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
DECODER = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    **TEXT,
)
ENCODER = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    **TEXT,
)


@dataclass(frozen=True)
class Architecture:
    """One zoo model: `build()` returns (model in eval mode, example inputs)."""

    name: str
    family: str
    config: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: str = "tokens"

    def build(self, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        torch.manual_seed(seed)
        config = getattr(transformers, self.config)(**self.kwargs)
        model = getattr(transformers, self.model)(config).eval()
        return model, example_inputs(self.inputs, config, batch, length)


def example_inputs(kind: str, config: Any, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Random inputs of the given kind that fit `config`."""
    generator = torch.Generator().manual_seed(1)
    if kind == "pixels":
        size = config.image_size
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=generator)}
    vocab = config.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.randint(3, vocab, (batch, max(2, length // 2)), generator=generator)
    return inputs


ARCHITECTURES = [
    Architecture("llama", "decoder", "LlamaConfig", "LlamaForCausalLM", dict(DECODER, num_key_value_heads=2)),
    Architecture("mistral", "decoder", "MistralConfig", "MistralForCausalLM", dict(DECODER, num_key_value_heads=2)),
    Architecture("qwen2", "decoder", "Qwen2Config", "Qwen2ForCausalLM", dict(DECODER, num_key_value_heads=2)),
    Architecture(
        "qwen3", "decoder", "Qwen3Config", "Qwen3ForCausalLM", dict(DECODER, num_key_value_heads=2, head_dim=8)
    ),
    Architecture(
        "qwen3_moe",
        "moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            DECODER, num_key_value_heads=2, head_dim=8, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2
        ),
    ),
    Architecture(
        "mixtral",
        "moe",
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(DECODER, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    ),
    Architecture(
        "gemma3",
        "decoder",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(DECODER, num_key_value_heads=2, head_dim=8, sliding_window=4),
    ),
    Architecture("phi3", "decoder", "Phi3Config", "Phi3ForCausalLM", dict(DECODER, num_key_value_heads=2)),
    Architecture(
        "gpt2",
        "decoder",
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, **TEXT),
    ),
    Architecture("gpt_neox", "decoder", "GPTNeoXConfig", "GPTNeoXForCausalLM", dict(DECODER)),
    Architecture("bert", "encoder", "BertConfig", "BertForSequenceClassification", dict(ENCODER, num_labels=3)),
    Architecture(
        "roberta", "encoder", "RobertaConfig", "RobertaForSequenceClassification", dict(ENCODER, num_labels=3)
    ),
    Architecture(
        "distilbert",
        "encoder",
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        dict(vocab_size=96, dim=32, hidden_dim=64, n_layers=2, n_heads=4, num_labels=3, pad_token_id=0),
    ),
    Architecture(
        "vit",
        "vision",
        "ViTConfig",
        "ViTForImageClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "t5",
        "encoder-decoder",
        "T5Config",
        "T5ForConditionalGeneration",
        dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, **TEXT),
        inputs="seq2seq",
    ),
]


def architectures(names: list[str] | None = None) -> list[Architecture]:
    """The built-in zoo, or the named entries of it."""
    if names is None:
        return list(ARCHITECTURES)
    known = {a.name: a for a in ARCHITECTURES}
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(f"unknown zoo architecture(s) {', '.join(missing)}; known: {', '.join(known)}")
    return [known[n] for n in names]


@dataclass(frozen=True)
class ConfigEntry:
    """A user's zoo entry: a HuggingFace model id or local folder, built from its config (no weights)."""

    name: str
    family: str = "user"

    def build(self, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        import transformers

        torch.manual_seed(seed)
        config = transformers.AutoConfig.from_pretrained(self.name)
        names = " ".join(config.architectures or [])
        if "CausalLM" in names or "LMHead" in names:
            loader = transformers.AutoModelForCausalLM
        elif "SequenceClassification" in names:
            loader = transformers.AutoModelForSequenceClassification
        elif "ImageClassification" in names:
            loader = transformers.AutoModelForImageClassification
        elif "ConditionalGeneration" in names or "Seq2Seq" in names:
            loader = transformers.AutoModelForSeq2SeqLM
        else:
            loader = transformers.AutoModel
        model = loader.from_config(config).eval()
        kind = (
            "pixels"
            if hasattr(config, "image_size") and not hasattr(config, "vocab_size")
            else ("seq2seq" if getattr(config, "is_encoder_decoder", False) else "tokens")
        )
        return model, example_inputs(kind, config, batch, length)


def from_file(path) -> list[ConfigEntry]:
    """Zoo entries from a file: one HuggingFace id or local folder per line; '#' starts a comment."""
    from pathlib import Path

    lines = Path(path).read_text().splitlines()
    return [ConfigEntry(line.split("#", 1)[0].strip()) for line in lines if line.split("#", 1)[0].strip()]
