"""A zoo of HuggingFace architectures built from small configs with random weights (no downloads), and the
plain PyTorch models of `torch_zoo.py`.

Used by the architecture tests and by `lrpgraph coverage`. Each HuggingFace entry names a transformers config
and model class, the config's size arguments, and the kind of inputs the model takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .torch_zoo import TORCH_ARCHITECTURES, TorchArchitecture

TEXT = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
LANGUAGE = dict(  # decoders and encoders alike: 2 layers, 4 heads, hidden size 32
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
    if kind == "audio-features":  # log-mel frames; Whisper wants exactly 2 × max_source_positions of them
        frames = 2 * config.max_source_positions
        return {"input_features": torch.randn(batch, config.num_mel_bins, frames, generator=generator)}
    if kind == "audio-wave":
        return {"input_values": torch.randn(batch, 400, generator=generator)}
    vocab = config.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.randint(3, vocab, (batch, max(2, length // 2)), generator=generator)
    return inputs


VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4,
    num_labels=3,
)
ARCHITECTURES = [
    # decoder language models
    Architecture("llama", "decoder", "LlamaConfig", "LlamaForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture("mistral", "decoder", "MistralConfig", "MistralForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture("qwen2", "decoder", "Qwen2Config", "Qwen2ForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture(
        "qwen3", "decoder", "Qwen3Config", "Qwen3ForCausalLM", dict(LANGUAGE, num_key_value_heads=2, head_dim=8)
    ),
    Architecture(
        "gemma", "decoder", "GemmaConfig", "GemmaForCausalLM", dict(LANGUAGE, num_key_value_heads=2, head_dim=8)
    ),
    Architecture(
        "gemma2",
        "decoder",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(LANGUAGE, num_key_value_heads=2, head_dim=8, sliding_window=4),
    ),
    Architecture(
        "gemma3",
        "decoder",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(LANGUAGE, num_key_value_heads=2, head_dim=8, sliding_window=4),
    ),
    Architecture("phi", "decoder", "PhiConfig", "PhiForCausalLM", dict(LANGUAGE, num_key_value_heads=4)),
    Architecture("phi3", "decoder", "Phi3Config", "Phi3ForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture("olmo", "decoder", "OlmoConfig", "OlmoForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture("stablelm", "decoder", "StableLmConfig", "StableLmForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture(
        "starcoder2", "decoder", "Starcoder2Config", "Starcoder2ForCausalLM", dict(LANGUAGE, num_key_value_heads=2)
    ),
    Architecture("cohere", "decoder", "CohereConfig", "CohereForCausalLM", dict(LANGUAGE, num_key_value_heads=2)),
    Architecture(
        "gpt2",
        "decoder",
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, **TEXT),
    ),
    Architecture(
        "gptj",
        "decoder",
        "GPTJConfig",
        "GPTJForCausalLM",
        dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, **TEXT),
    ),
    Architecture("gpt_neox", "decoder", "GPTNeoXConfig", "GPTNeoXForCausalLM", dict(LANGUAGE)),
    Architecture(
        "opt",
        "decoder",
        "OPTConfig",
        "OPTForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            **TEXT,
        ),
    ),
    Architecture(
        "bloom",
        "decoder",
        "BloomConfig",
        "BloomForCausalLM",
        dict(vocab_size=96, hidden_size=32, n_layer=2, n_head=4, **TEXT),
    ),
    Architecture(
        "falcon",
        "decoder",
        "FalconConfig",
        "FalconForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            **TEXT,
        ),
    ),
    # mixtures of experts
    Architecture(
        "mixtral",
        "moe",
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(LANGUAGE, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    ),
    Architecture(
        "qwen3_moe",
        "moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(
            LANGUAGE, num_key_value_heads=2, head_dim=8, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2
        ),
    ),
    Architecture(
        "qwen2_moe",
        "moe",
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            LANGUAGE,
            num_key_value_heads=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
        ),
    ),
    # encoders
    Architecture("bert", "encoder", "BertConfig", "BertForSequenceClassification", dict(LANGUAGE, num_labels=3)),
    Architecture(
        "roberta", "encoder", "RobertaConfig", "RobertaForSequenceClassification", dict(LANGUAGE, num_labels=3)
    ),
    Architecture(
        "xlm_roberta",
        "encoder",
        "XLMRobertaConfig",
        "XLMRobertaForSequenceClassification",
        dict(LANGUAGE, num_labels=3),
    ),
    Architecture(
        "distilbert",
        "encoder",
        "DistilBertConfig",
        "DistilBertForSequenceClassification",
        dict(vocab_size=96, dim=32, hidden_dim=64, n_layers=2, n_heads=4, num_labels=3, pad_token_id=0),
    ),
    Architecture(
        "albert",
        "encoder",
        "AlbertConfig",
        "AlbertForSequenceClassification",
        dict(LANGUAGE, embedding_size=16, num_labels=3),
    ),
    Architecture(
        "electra",
        "encoder",
        "ElectraConfig",
        "ElectraForSequenceClassification",
        dict(LANGUAGE, embedding_size=16, num_labels=3),
    ),
    Architecture(
        "deberta_v2",
        "encoder",
        "DebertaV2Config",
        "DebertaV2ForSequenceClassification",
        dict(
            LANGUAGE,
            num_labels=3,
            relative_attention=True,
            position_buckets=8,
            max_relative_positions=16,
            pos_att_type=["p2c", "c2p"],
        ),
    ),
    Architecture("mpnet", "encoder", "MPNetConfig", "MPNetForSequenceClassification", dict(LANGUAGE, num_labels=3)),
    # encoder-decoders
    Architecture(
        "t5",
        "encoder-decoder",
        "T5Config",
        "T5ForConditionalGeneration",
        dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, **TEXT),
        inputs="seq2seq",
    ),
    Architecture(
        "bart",
        "encoder-decoder",
        "BartConfig",
        "BartForConditionalGeneration",
        dict(
            vocab_size=96,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            decoder_start_token_id=2,
            **TEXT,
        ),
        inputs="seq2seq",
    ),
    # vision
    Architecture("vit", "vision", "ViTConfig", "ViTForImageClassification", dict(VISION), inputs="pixels"),
    Architecture("deit", "vision", "DeiTConfig", "DeiTForImageClassification", dict(VISION), inputs="pixels"),
    Architecture(
        "beit",
        "vision",
        "BeitConfig",
        "BeitForImageClassification",
        dict(VISION, use_relative_position_bias=True),
        inputs="pixels",
    ),
    Architecture(
        "dinov2",
        "vision",
        "Dinov2Config",
        "Dinov2ForImageClassification",
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "swin",
        "vision",
        "SwinConfig",
        "SwinForImageClassification",
        dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "convnext",
        "vision",
        "ConvNextConfig",
        "ConvNextForImageClassification",
        dict(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "resnet",
        "vision",
        "ResNetConfig",
        "ResNetForImageClassification",
        dict(image_size=32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3),
        inputs="pixels",
    ),
    # audio
    Architecture(
        "whisper_encoder",
        "audio",
        "WhisperConfig",
        "WhisperForAudioClassification",
        dict(
            vocab_size=96,
            num_mel_bins=8,
            encoder_layers=2,
            encoder_attention_heads=4,
            decoder_layers=1,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            d_model=32,
            max_source_positions=16,
            max_target_positions=16,
            num_labels=3,
        ),
        inputs="audio-features",
    ),
    Architecture(
        "wav2vec2",
        "audio",
        "Wav2Vec2Config",
        "Wav2Vec2ForSequenceClassification",
        dict(
            vocab_size=32,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            conv_dim=(16, 16),
            conv_stride=(4, 2),
            conv_kernel=(8, 4),
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4,
            num_labels=3,
            feat_extract_norm="group",
        ),
        inputs="audio-wave",
    ),
    # state space
    Architecture(
        "mamba",
        "state-space",
        "MambaConfig",
        "MambaForCausalLM",
        dict(vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, **TEXT),
    ),
]


ARCHITECTURES += TORCH_ARCHITECTURES


def architectures(names: list[str] | None = None) -> list[Architecture | TorchArchitecture]:
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
        try:
            config = transformers.AutoConfig.from_pretrained(self.name)
        except OSError:
            if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False"):
                raise
            raise OSError(
                f"'{self.name}' is not a local folder nor in the HuggingFace cache, and the hub is offline "
                "(HF_HUB_OFFLINE=1; unset it to download configs)"
            ) from None
        _, loader = auto_class(config)
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


def auto_class(config: Any) -> tuple[str, Any]:
    """(kind, transformers Auto class) for a config, from its `architectures` names: kind is 'causal',
    'classifier', 'image', 'seq2seq', or 'base' (AutoModel) when none of them fits."""
    import transformers

    names = " ".join(config.architectures or [])
    for kind, markers, loader in (
        ("causal", ("CausalLM", "LMHead"), "AutoModelForCausalLM"),
        ("classifier", ("SequenceClassification",), "AutoModelForSequenceClassification"),
        ("image", ("ImageClassification",), "AutoModelForImageClassification"),
        ("seq2seq", ("ConditionalGeneration", "Seq2Seq"), "AutoModelForSeq2SeqLM"),
    ):
        if any(marker in names for marker in markers):
            return kind, getattr(transformers, loader)
    return "base", transformers.AutoModel
