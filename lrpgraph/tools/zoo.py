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
KV = dict(LANGUAGE, num_key_value_heads=2)
SEQ2SEQ = dict(  # bart-style encoder-decoders
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
)
T5ISH = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0, **TEXT)
AUDIO = dict(  # wav2vec2-style feature encoders
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
        dict(AUDIO),
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
    # decoders (more)
    Architecture(
        "gpt_neo",
        "decoder",
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
            **TEXT,
        ),
    ),
    Architecture(
        "codegen",
        "decoder",
        "CodeGenConfig",
        "CodeGenForCausalLM",
        dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_ctx=64, rotary_dim=4, **TEXT),
    ),
    Architecture(
        "gpt_bigcode",
        "decoder",
        "GPTBigCodeConfig",
        "GPTBigCodeForCausalLM",
        dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, **TEXT),
    ),
    Architecture(
        "ctrl",
        "decoder",
        "CTRLConfig",
        "CTRLLMHeadModel",
        dict(vocab_size=96, n_embd=32, dff=64, n_layer=2, n_head=4, n_positions=64, **TEXT),
    ),
    Architecture("biogpt", "decoder", "BioGptConfig", "BioGptForCausalLM", dict(LANGUAGE)),
    Architecture(
        "xglm",
        "decoder",
        "XGLMConfig",
        "XGLMForCausalLM",
        dict(
            vocab_size=96, d_model=32, ffn_dim=64, num_layers=2, attention_heads=4, max_position_embeddings=64, **TEXT
        ),
    ),
    Architecture(
        "mpt",
        "decoder",
        "MptConfig",
        "MptForCausalLM",
        dict(vocab_size=96, d_model=32, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=64, **TEXT),
    ),
    Architecture("persimmon", "decoder", "PersimmonConfig", "PersimmonForCausalLM", dict(LANGUAGE)),
    Architecture("olmo2", "decoder", "Olmo2Config", "Olmo2ForCausalLM", dict(KV)),
    Architecture("granite", "decoder", "GraniteConfig", "GraniteForCausalLM", dict(KV)),
    Architecture("glm", "decoder", "GlmConfig", "GlmForCausalLM", dict(KV, head_dim=8)),
    Architecture("helium", "decoder", "HeliumConfig", "HeliumForCausalLM", dict(KV, head_dim=8)),
    Architecture("nemotron", "decoder", "NemotronConfig", "NemotronForCausalLM", dict(KV, head_dim=8)),
    Architecture("apertus", "decoder", "ApertusConfig", "ApertusForCausalLM", dict(KV)),
    Architecture("cohere2", "decoder", "Cohere2Config", "Cohere2ForCausalLM", dict(KV, sliding_window=4)),
    Architecture("diffllama", "decoder", "DiffLlamaConfig", "DiffLlamaForCausalLM", dict(KV, head_dim=8)),
    Architecture("exaone4", "decoder", "Exaone4Config", "Exaone4ForCausalLM", dict(KV, sliding_window=4)),
    Architecture("ernie4_5", "decoder", "Ernie4_5Config", "Ernie4_5ForCausalLM", dict(KV, head_dim=8)),
    Architecture(
        "recurrent_gemma",
        "decoder",
        "RecurrentGemmaConfig",
        "RecurrentGemmaForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            lru_width=32,
            attention_window_size=8,
            conv1d_width=4,
            block_types=["recurrent", "attention"],
            **TEXT,
        ),
    ),
    Architecture(
        "llama4_text",
        "decoder",
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        dict(KV, head_dim=8, intermediate_size_mlp=64, num_local_experts=2, num_experts_per_tok=1),
    ),
    # mixtures of experts (more)
    Architecture(
        "deepseek_v2",
        "moe",
        "DeepseekV2Config",
        "DeepseekV2ForCausalLM",
        dict(
            LANGUAGE,
            num_key_value_heads=4,
            kv_lora_rank=16,
            q_lora_rank=None,
            qk_nope_head_dim=8,
            qk_rope_head_dim=4,
            v_head_dim=8,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=16,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        ),
    ),
    Architecture(
        "deepseek_v3",
        "moe",
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            LANGUAGE,
            num_key_value_heads=4,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=4,
            v_head_dim=8,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=16,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        ),
    ),
    Architecture("olmoe", "moe", "OlmoeConfig", "OlmoeForCausalLM", dict(KV, num_experts=4, num_experts_per_tok=2)),
    Architecture(
        "granitemoe",
        "moe",
        "GraniteMoeConfig",
        "GraniteMoeForCausalLM",
        dict(KV, num_local_experts=4, num_experts_per_tok=2),
    ),
    Architecture(
        "phimoe", "moe", "PhimoeConfig", "PhimoeForCausalLM", dict(KV, num_local_experts=4, num_experts_per_tok=2)
    ),
    Architecture(
        "dbrx",
        "moe",
        "DbrxConfig",
        "DbrxForCausalLM",
        dict(
            vocab_size=96,
            d_model=32,
            n_heads=4,
            n_layers=2,
            max_seq_len=64,
            attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
            ffn_config={
                "hidden_size": 32,
                "ffn_hidden_size": 32,
                "moe_num_experts": 4,
                "moe_top_k": 2,
            },  # transformers 5.13 sizes the router by ffn_hidden_size
            **TEXT,
        ),
    ),
    Architecture(
        "jetmoe",
        "moe",
        "JetMoeConfig",
        "JetMoeForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_key_value_heads=2,
            kv_channels=8,
            intermediate_size=64,
            max_position_embeddings=64,
            num_local_experts=4,
            num_experts_per_tok=2,
            **TEXT,
        ),
    ),
    Architecture(
        "gpt_oss",
        "moe",
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(KV, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4),
    ),
    Architecture(
        "jamba",
        "moe",
        "JambaConfig",
        "JambaForCausalLM",
        dict(
            KV,
            num_experts=4,
            num_experts_per_tok=2,
            expert_layer_period=2,
            expert_layer_offset=1,
            attn_layer_period=2,
            attn_layer_offset=1,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
            mamba_dt_rank=4,
            use_mamba_kernels=False,
        ),
    ),
    # state space / recurrent / hybrid (more)
    Architecture(
        "falcon_mamba",
        "state-space",
        "FalconMambaConfig",
        "FalconMambaForCausalLM",
        dict(vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, **TEXT),
    ),
    Architecture(
        "rwkv",
        "state-space",
        "RwkvConfig",
        "RwkvForCausalLM",
        dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            attention_hidden_size=32,
            intermediate_size=64,
            context_length=64,
            rescale_every=0,  # else its first eval call halves its own weights in place
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    # encoders (more)
    Architecture(
        "xlnet",
        "encoder",
        "XLNetConfig",
        "XLNetForSequenceClassification",
        dict(vocab_size=96, d_model=32, n_layer=2, n_head=4, d_inner=64, num_labels=3, **TEXT),
    ),
    Architecture(
        "funnel",
        "encoder",
        "FunnelConfig",
        "FunnelForSequenceClassification",
        dict(
            vocab_size=96, block_sizes=[1, 1], d_model=32, n_head=4, d_head=8, d_inner=64, num_labels=3, pad_token_id=0
        ),
    ),
    Architecture(
        "perceiver",
        "encoder",
        "PerceiverConfig",
        "PerceiverForSequenceClassification",
        dict(
            vocab_size=96,
            max_position_embeddings=64,
            num_latents=8,
            d_latents=32,
            d_model=32,
            num_blocks=1,
            num_self_attends_per_block=2,
            num_self_attention_heads=4,
            num_cross_attention_heads=4,
            num_labels=3,
        ),
    ),
    Architecture("fnet", "encoder", "FNetConfig", "FNetForSequenceClassification", dict(LANGUAGE, num_labels=3)),
    Architecture(
        "big_bird",
        "encoder",
        "BigBirdConfig",
        "BigBirdForSequenceClassification",
        dict(LANGUAGE, block_size=2, num_random_blocks=1, num_labels=3),
    ),
    Architecture(
        "canine",
        "encoder",
        "CanineConfig",
        "CanineForSequenceClassification",
        dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            downsampling_rate=4,
            num_hash_functions=4,
            num_hash_buckets=64,
            local_transformer_stride=4,
            num_labels=3,
            **TEXT,
        ),
    ),
    Architecture(
        "mobilebert",
        "encoder",
        "MobileBertConfig",
        "MobileBertForSequenceClassification",
        dict(LANGUAGE, embedding_size=16, intra_bottleneck_size=16, num_feedforward_networks=2, num_labels=3),
    ),
    Architecture(
        "squeezebert",
        "encoder",
        "SqueezeBertConfig",
        "SqueezeBertForSequenceClassification",
        dict(
            LANGUAGE,
            embedding_size=32,
            q_groups=2,
            k_groups=2,
            v_groups=2,
            post_attention_groups=1,
            intermediate_groups=2,
            output_groups=2,
            num_labels=3,
        ),
    ),
    Architecture(
        "layoutlm",
        "encoder",
        "LayoutLMConfig",
        "LayoutLMForSequenceClassification",
        dict(LANGUAGE, max_2d_position_embeddings=64, num_labels=3),
    ),
    Architecture(
        "roformer",
        "encoder",
        "RoFormerConfig",
        "RoFormerForSequenceClassification",
        dict(LANGUAGE, embedding_size=32, num_labels=3),
    ),
    Architecture(
        "esm",
        "encoder",
        "EsmConfig",
        "EsmForSequenceClassification",
        dict(LANGUAGE, mask_token_id=3, position_embedding_type="rotary", num_labels=3),
    ),
    Architecture(
        "nystromformer",
        "encoder",
        "NystromformerConfig",
        "NystromformerForSequenceClassification",
        dict(LANGUAGE, num_landmarks=4, segment_means_seq_len=8, conv_kernel_size=3, num_labels=3),
    ),
    Architecture(
        "yoso",
        "encoder",
        "YosoConfig",
        "YosoForSequenceClassification",
        dict(LANGUAGE, use_expectation=True, use_fast_hash=False, num_labels=3),
    ),
    Architecture(
        "convbert",
        "encoder",
        "ConvBertConfig",
        "ConvBertForSequenceClassification",
        dict(LANGUAGE, embedding_size=32, conv_kernel_size=3, num_labels=3),
    ),
    Architecture(
        "megatron_bert",
        "encoder",
        "MegatronBertConfig",
        "MegatronBertForSequenceClassification",
        dict(LANGUAGE, num_labels=3),
    ),
    Architecture(
        "rembert",
        "encoder",
        "RemBertConfig",
        "RemBertForSequenceClassification",
        dict(LANGUAGE, input_embedding_size=16, output_embedding_size=16, num_labels=3),
    ),
    Architecture(
        "deberta",
        "encoder",
        "DebertaConfig",
        "DebertaForSequenceClassification",
        dict(LANGUAGE, relative_attention=True, max_relative_positions=16, pos_att_type=["p2c", "c2p"], num_labels=3),
    ),
    Architecture(
        "modernbert",
        "encoder",
        "ModernBertConfig",
        "ModernBertForSequenceClassification",
        dict(LANGUAGE, local_attention=4, num_labels=3),
    ),
    Architecture("mra", "encoder", "MraConfig", "MraForSequenceClassification", dict(LANGUAGE, num_labels=3)),
    # encoder-decoders (more)
    Architecture("marian", "encoder-decoder", "MarianConfig", "MarianMTModel", dict(SEQ2SEQ), inputs="seq2seq"),
    Architecture(
        "mbart", "encoder-decoder", "MBartConfig", "MBartForConditionalGeneration", dict(SEQ2SEQ), inputs="seq2seq"
    ),
    Architecture(
        "pegasus",
        "encoder-decoder",
        "PegasusConfig",
        "PegasusForConditionalGeneration",
        dict(SEQ2SEQ),
        inputs="seq2seq",
    ),
    Architecture(
        "blenderbot",
        "encoder-decoder",
        "BlenderbotConfig",
        "BlenderbotForConditionalGeneration",
        dict(SEQ2SEQ),
        inputs="seq2seq",
    ),
    Architecture(
        "m2m_100", "encoder-decoder", "M2M100Config", "M2M100ForConditionalGeneration", dict(SEQ2SEQ), inputs="seq2seq"
    ),
    Architecture(
        "plbart", "encoder-decoder", "PLBartConfig", "PLBartForConditionalGeneration", dict(SEQ2SEQ), inputs="seq2seq"
    ),
    Architecture(
        "led",
        "encoder-decoder",
        "LEDConfig",
        "LEDForConditionalGeneration",
        dict(
            {k: v for k, v in SEQ2SEQ.items() if k != "max_position_embeddings"},
            max_encoder_position_embeddings=64,
            max_decoder_position_embeddings=64,
            attention_window=4,
        ),
        inputs="seq2seq",
    ),
    Architecture(
        "bigbird_pegasus",
        "encoder-decoder",
        "BigBirdPegasusConfig",
        "BigBirdPegasusForConditionalGeneration",
        dict(SEQ2SEQ, block_size=2, num_random_blocks=1),
        inputs="seq2seq",
    ),
    Architecture(
        "nllb_moe",
        "encoder-decoder",
        "NllbMoeConfig",
        "NllbMoeForConditionalGeneration",
        dict(SEQ2SEQ, num_experts=4, expert_capacity=8, encoder_sparse_step=2, decoder_sparse_step=2),
        inputs="seq2seq",
    ),
    Architecture("mt5", "encoder-decoder", "MT5Config", "MT5ForConditionalGeneration", dict(T5ISH), inputs="seq2seq"),
    Architecture(
        "umt5", "encoder-decoder", "UMT5Config", "UMT5ForConditionalGeneration", dict(T5ISH), inputs="seq2seq"
    ),
    # vision (more)
    Architecture(
        "convnextv2",
        "vision",
        "ConvNextV2Config",
        "ConvNextV2ForImageClassification",
        dict(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "swinv2",
        "vision",
        "Swinv2Config",
        "Swinv2ForImageClassification",
        dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "data2vec_vision",
        "vision",
        "Data2VecVisionConfig",
        "Data2VecVisionForImageClassification",
        dict(VISION, use_relative_position_bias=True),
        inputs="pixels",
    ),
    Architecture(
        "segformer",
        "vision",
        "SegformerConfig",
        "SegformerForImageClassification",
        dict(
            image_size=32,
            num_encoder_blocks=2,
            depths=[1, 1],
            sr_ratios=[2, 1],
            hidden_sizes=[8, 16],
            patch_sizes=[3, 3],
            strides=[2, 2],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
            decoder_hidden_size=16,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "poolformer",
        "vision",
        "PoolFormerConfig",
        "PoolFormerForImageClassification",
        dict(
            image_size=32,
            num_encoder_blocks=2,
            depths=[1, 1],
            hidden_sizes=[8, 16],
            patch_sizes=[7, 3],
            strides=[4, 2],
            padding=[2, 1],
            pool_size=3,
            mlp_ratio=2.0,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "mobilevit",
        "vision",
        "MobileViTConfig",
        "MobileViTForImageClassification",
        dict(
            image_size=32,
            patch_size=2,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
            num_attention_heads=2,
            initializer_range=0.5,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "levit",
        "vision",
        "LevitConfig",
        "LevitForImageClassification",
        dict(
            image_size=32,
            patch_size=16,
            hidden_sizes=[16, 24, 32],
            num_attention_heads=[2, 3, 4],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
            mlp_ratio=[2, 2, 2],
            attention_ratio=[2, 2, 2],
            initializer_range=0.2,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "regnet",
        "vision",
        "RegNetConfig",
        "RegNetForImageClassification",
        dict(
            image_size=32,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            groups_width=8,
            layer_type="y",
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "pvt",
        "vision",
        "PvtConfig",
        "PvtForImageClassification",
        dict(
            image_size=32,
            num_encoder_blocks=2,
            depths=[1, 1],
            sequence_reduction_ratios=[2, 1],
            hidden_sizes=[16, 32],
            patch_sizes=[4, 2],
            strides=[4, 2],
            num_attention_heads=[1, 2],
            mlp_ratios=[2, 2],
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "mobilenet_v2",
        "vision",
        "MobileNetV2Config",
        "MobileNetV2ForImageClassification",
        dict(image_size=32, depth_multiplier=0.25, initializer_range=0.25, num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "efficientnet",
        "vision",
        "EfficientNetConfig",
        "EfficientNetForImageClassification",
        dict(
            image_size=32,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=320,
            initializer_range=0.6,
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "focalnet",
        "vision",
        "FocalNetConfig",
        "FocalNetForImageClassification",
        dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], hidden_sizes=[16, 32], num_labels=3),
        inputs="pixels",
    ),
    Architecture(
        "cvt",
        "vision",
        "CvtConfig",
        "CvtForImageClassification",
        dict(
            image_size=32,
            patch_sizes=[7, 3],
            patch_stride=[4, 2],
            patch_padding=[2, 1],
            embed_dim=[16, 32],
            num_heads=[1, 2],
            depth=[1, 2],
            mlp_ratio=[2.0, 2.0],
            attention_drop_rate=[0.0, 0.0],
            drop_rate=[0.0, 0.0],
            drop_path_rate=[0.0, 0.0],
            qkv_bias=[True, True],
            cls_token=[False, True],
            qkv_projection_method=["dw_bn", "dw_bn"],
            kernel_qkv=[3, 3],
            padding_kv=[1, 1],
            stride_kv=[2, 2],
            padding_q=[1, 1],
            stride_q=[1, 1],
            num_labels=3,
        ),
        inputs="pixels",
    ),
    Architecture(
        "bit",
        "vision",
        "BitConfig",
        "BitForImageClassification",
        dict(image_size=32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_groups=4, num_labels=3),
        inputs="pixels",
    ),
    Architecture("ijepa", "vision", "IJepaConfig", "IJepaForImageClassification", dict(VISION), inputs="pixels"),
    Architecture(
        "siglip_vision",
        "vision",
        "SiglipConfig",
        "SiglipForImageClassification",
        dict(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=16,
                patch_size=4,
            ),
            num_labels=3,
            image_size=16,
        ),
        inputs="pixels",
    ),
    # audio (more)
    Architecture(
        "hubert", "audio", "HubertConfig", "HubertForSequenceClassification", dict(AUDIO), inputs="audio-wave"
    ),
    Architecture(
        "wavlm",
        "audio",
        "WavLMConfig",
        "WavLMForSequenceClassification",
        dict(AUDIO, num_buckets=32, max_bucket_distance=64),
        inputs="audio-wave",
    ),
    Architecture(
        "sew", "audio", "SEWConfig", "SEWForSequenceClassification", dict(AUDIO, squeeze_factor=2), inputs="audio-wave"
    ),
    Architecture(
        "sew_d",
        "audio",
        "SEWDConfig",
        "SEWDForSequenceClassification",
        dict(AUDIO, squeeze_factor=2, position_buckets=8, max_relative_positions=16),
        inputs="audio-wave",
    ),
    Architecture(
        "unispeech", "audio", "UniSpeechConfig", "UniSpeechForSequenceClassification", dict(AUDIO), inputs="audio-wave"
    ),
    Architecture(
        "unispeech_sat",
        "audio",
        "UniSpeechSatConfig",
        "UniSpeechSatForSequenceClassification",
        dict(AUDIO),
        inputs="audio-wave",
    ),
    Architecture(
        "data2vec_audio",
        "audio",
        "Data2VecAudioConfig",
        "Data2VecAudioForSequenceClassification",
        dict(AUDIO, num_conv_pos_embeddings=3),
        inputs="audio-wave",
    ),
    Architecture(
        "wav2vec2_conformer",
        "audio",
        "Wav2Vec2ConformerConfig",
        "Wav2Vec2ConformerForSequenceClassification",
        dict(AUDIO, position_embeddings_type="rotary", conv_depthwise_kernel_size=3),
        inputs="audio-wave",
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
