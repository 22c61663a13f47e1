"""The automatic tiny-model builder and `lrpgraph coverage --transformers` (issue 28): configs shrunk by hand-worked
rules, a fixed sample of model types built and run, and the command explaining, verifying and resuming."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lrpgraph.tools.tiny import Shrink, shrunk, tiny_model

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}

# One of each kind the builder must reach: decoders (dense, MoE, hybrid linear attention, state space), encoders,
# encoder-decoders, vision (ViT, windowed, convolutional, backbone with stage indices, a detector on a timm
# backbone), audio, dual encoders.
SAMPLE = [
    "llama", "gpt2", "mixtral", "qwen3_next", "jamba", "mamba2", "falcon_h1", "bert", "deberta-v2", "t5", "bart",
    "vit", "swin", "convnext", "dinov2", "wav2vec2", "whisper", "clip", "gemma3_text", "phi3", "detr",
]  # fmt: skip


def test_shrunk_keeps_one_layer_of_each_kind_and_moves_what_points_at_layers():
    config = {
        "model_type": "x",
        "num_hidden_layers": 6,
        "hidden_size": 256,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "intermediate_size": 1024,
        "vocab_size": 50000,
        "pad_token_id": 0,
        "image_token_id": 4000,
        "layer_types": ["sliding", "sliding", "full", "sliding", "sliding", "full"],
        "full_attn_layer_ids": [2, 5],
        "per_layer_config": {"02": {"head_dim": 16}, "04": {"head_dim": 32}},
        "rope_parameters": {"mrope_section": [16, 24, 24]},
        "use_cache": True,
        "text_config": {"model_type": "y", "num_layers": 12, "d_model": 512, "num_heads": 3},
    }
    small = shrunk(config)
    assert small["num_hidden_layers"] == 2 and small["layer_types"] == ["sliding", "full"]  # layers 0 and 2 kept
    assert small["full_attn_layer_ids"] == [1]  # layer 2 is now layer 1; layer 5 is nearest to it too
    assert small["per_layer_config"] == {"01": {"head_dim": 16}}  # layer 4 is gone
    assert (small["hidden_size"], small["num_attention_heads"], small["num_key_value_heads"]) == (32, 4, 2)
    assert small["intermediate_size"] == 64 and small["use_cache"] is False
    assert small["vocab_size"] == 4001  # the largest token id still fits
    assert small["rope_parameters"]["mrope_section"] == [2, 1, 1]  # sums to head_dim / 2 = 4
    assert small["text_config"] == {"model_type": "y", "num_layers": 2, "d_model": 32, "num_heads": 2}


def test_shrunk_renumbers_a_list_of_each_layers_own_index():
    """Mistral Large 4's `kv_source_layers` defaults to every layer's own index (no sharing): it names no kinds of
    layer, so it does not keep all 72 layers, and is renumbered for the layers kept."""
    depth = 72
    config = {
        "model_type": "x",
        "num_hidden_layers": depth,
        "kv_source_layers": list(range(depth)),
        "mlp_layer_types": ["dense"] + ["sparse"] * (depth - 1),
    }
    small = shrunk(config)
    assert small["num_hidden_layers"] == 2 and small["mlp_layer_types"] == ["dense", "sparse"]
    assert small["kv_source_layers"] == [0, 1]


def test_shrunk_stage_lists_stay_shrunk_where_the_stages_are_layers():
    """An audio tower of 4 stages that are its layers (Muse Spark's): each stage is a kind of its own, so all 4 are
    kept, and the stage widths and depths are the shrunk ones, not the defaults (101M parameters before)."""
    config = {
        "model_type": "x",
        "num_hidden_layers": 4,
        "patch_sizes": [16, 6, 5, 4],
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [2, 2, 2, 2],
    }
    small = shrunk(config)
    assert small["num_hidden_layers"] == 4 and small["patch_sizes"] == [16, 6, 5, 4]
    assert small["hidden_sizes"] == [8, 8, 16, 32] and small["depths"] == [1, 1, 1, 1]


def test_shrunk_builds_a_timm_backbone_from_transformers_resnet():
    """timm needs torchvision, which has no CPU wheel here: DETR-style detectors get transformers' own ResNet."""
    timm = {"model_type": "timm_backbone", "backbone": "resnet50", "num_channels": 3, "out_indices": [2, 3, 4]}
    backbone = shrunk({"model_type": "detr", "d_model": 256, "backbone_config": timm})["backbone_config"]
    assert (backbone["model_type"], backbone["num_channels"], backbone["out_indices"]) == ("resnet", 3, [2, 3, 4])
    assert backbone["depths"] == [1, 1, 1, 1] and max(backbone["hidden_sizes"]) <= 32  # shrunk as any ResNet


def test_shrunk_makes_every_table_of_ids_and_width_small():
    """Luke's entity vocabulary, Gemma 4's per-layer input embeddings, BLT's hashed n-grams, a VQ codebook, Flaubert's
    and Perceiver's widths: each kept its full size (hundreds of millions of parameters: 'not tiny')."""
    config = {
        "model_type": "x",
        "vocab_size": 50000,
        "entity_vocab_size": 500000,
        "vocab_size_per_layer_input": 262144,
        "encoder_hash_byte_group_vocab": 500002,
        "num_embeddings": 16384,
        "emb_dim": 2048,
        "d_latents": 1280,
        "hidden_size_global": 2048,
        "hidden_size_per_layer_input": 256,
    }
    small, how = shrunk(config), Shrink()
    assert all(small[k] == how.vocab for k in list(config)[1:6]), small
    assert all(small[k] == how.width for k in list(config)[6:]), small


def test_shrunk_state_space_heads_match_the_expanded_width():
    config = {"model_type": "mamba2", "hidden_size": 768, "expand": 2, "num_heads": 24, "head_dim": 64, "n_groups": 8}
    small = shrunk(config)
    assert small["num_heads"] * small["head_dim"] == 2 * small["hidden_size"] == 64 and small["n_groups"] == 1
    gentle = shrunk(config, Shrink(layers=None))
    assert gentle["hidden_size"] == 32 and gentle["num_heads"] == 4 and gentle["head_dim"] == 16


def test_shrunk_fills_the_head_fields_a_config_leaves_to_a_checkpoint():
    """Ministral's and HunYuan's head size and Nemotron's key-value heads default to None (a checkpoint sets them)."""
    small = shrunk({"model_type": "x", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": None,
                    "head_dim": None})  # fmt: skip
    assert (small["hidden_size"], small["num_attention_heads"], small["num_key_value_heads"]) == (32, 4, 4)
    assert small["head_dim"] == 8
    assert shrunk({"model_type": "x", "vocab_size": None})["vocab_size"] == Shrink().vocab  # ESM: left to the tokenizer


def test_shrunk_groups_of_a_width_follow_the_width():
    """Mimi's depthwise upsampling has one group per channel of the hidden width: its groups shrink with it."""
    small = shrunk({"model_type": "x", "hidden_size": 512, "upsample_groups": 512})
    assert small["upsample_groups"] == small["hidden_size"] == 32


def test_shrunk_widths_one_part_of_a_composite_hands_another():
    """SAM's vision encoder hands 256 channels (and 2 × 128 positional features) to a prompt encoder of width 256:
    they shrink with that width; a part whose width no other part had keeps its channels."""
    small = shrunk(
        {
            "model_type": "x",
            "vision_config": {"model_type": "v", "hidden_size": 768, "output_channels": 256, "num_pos_feats": 128},
            "prompt_encoder_config": {"model_type": "p", "hidden_size": 256},
        }
    )
    assert small["vision_config"]["output_channels"] == small["prompt_encoder_config"]["hidden_size"] == 32
    assert small["vision_config"]["num_pos_feats"] == 16
    alone = {"model_type": "v", "hidden_size": 768, "output_channels": 256}
    assert shrunk({"model_type": "x", "vision_config": alone})["vision_config"]["output_channels"] == 256


def test_shrunk_stages_follow_the_width_they_start_at_and_strided_images_keep_64_positions():
    """Hiera: stage widths from the hidden width (96 → 32: each a third), and a 1024² image of stride-4 patches
    (256 × 256 positions) made 256² (64 × 64); an image of at most 64 positions a side is kept."""
    stages = {"hidden_size": 96, "embed_dim_per_stage": [96, 192, 384, 768]}
    small = shrunk({"model_type": "x", **stages, "image_size": [1024, 1024], "patch_stride": [4, 4]})
    assert small["hidden_size"] == 32 and small["embed_dim_per_stage"] == [32, 64, 128, 256]
    assert small["image_size"] == [256, 256]
    assert shrunk({"model_type": "x", "image_size": [224, 224], "patch_stride": [4, 4]})["image_size"] == [224, 224]


def test_a_float64_twin_casts_what_its_code_makes_in_float32():
    """Granite Speech 5 makes its BatchNorm in float32 whatever the default dtype: the float64 twin is cast whole
    (before, its forward failed on mixed dtypes and verify fell back to float32)."""
    transformers = pytest.importorskip("transformers")
    if "granite_speech5_ctc" not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no granite_speech5_ctc")
    twin = tiny_model("granite_speech5_ctc", dtype=torch.float64)
    tensors = [*twin.model.parameters(), *twin.model.buffers()]
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())


def test_a_boolean_mask_whose_true_marks_padding_is_given_all_false():
    """Gemma 3n's audio_mel_mask is True where a frame is padding: all True masks every frame and the output no
    longer depends on the mel frames; the builder takes the mask that leaves them in."""
    transformers = pytest.importorskip("transformers")
    if "gemma3n_audio" not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no gemma3n_audio")
    tiny = tiny_model("gemma3n_audio")
    assert tiny.inputs["audio_mel_mask"].dtype == torch.bool and not tiny.inputs["audio_mel_mask"].any()
    other = {**tiny.inputs, "audio_mel": torch.randn_like(tiny.inputs["audio_mel"])}
    with torch.no_grad():
        assert not torch.allclose(tiny.model(**tiny.inputs)[0], tiny.model(**other)[0])


def test_shrunk_key_value_heads_per_layer_divide_the_heads():
    """Sapiens 2 lists each layer's key-value heads: each shrinks as a key-value head count does."""
    small = shrunk({"model_type": "x", "hidden_size": 1024, "num_attention_heads": 16,
                    "num_key_value_heads_per_layer": [16, 8, 16, 1]})  # fmt: skip
    assert small["num_attention_heads"] == 4 and small["num_key_value_heads_per_layer"] == [4, 2, 4, 1]


def test_shrunk_makes_forecasts_and_videos_short():
    """A forecaster's lengths left to a checkpoint, its decoder's start longer than the context, no time features (an
    empty input); a video of 32 frames."""
    config = {"model_type": "x", "prediction_length": None, "context_length": None, "label_length": 10,
              "num_time_features": 0, "lags_sequence": [1, 2, 3], "feature_size": 9, "num_frames": 32}  # fmt: skip
    small = shrunk(config)
    assert (small["prediction_length"], small["context_length"], small["label_length"]) == (4, 4, 2)
    assert small["num_time_features"] == 1 and "feature_size" not in small and small["num_frames"] == 4


@pytest.mark.parametrize(
    "model_type",
    [
        "glm4v_text",
        "glm4v",
        "videomae",
        "vjepa2",
        "informer",
        "patchtst",
        "timesfm",
        "nemotron",
        "siglip2",
        "emu3",
        "musicgen",
        "mimi_decoder",
        "udop",
        "lxmert",
        "granite_speech5_encoder",
        "qwen3_asr_encoder",
        "vibevoice_acoustic_tokenizer_decoder",
        "gemma4_vision",
        "pp_ocrv5_mobile_rec",
    ],
)
def test_rotary_sections_videos_series_patches_and_codebooks_build(model_type):
    """Rotary sections the model's code defaults to (sized for a head of 128), videos, time series, patches with their
    shapes (SigLIP 2), a causal LM that takes its composite's text config (Emu3), codebooks as rows (MusicGen), a
    codec's decoder of latents with depthwise upsampling (Mimi), words with their boxes (UDOP), region features named
    after their config widths (LXMERT), audio features of stacked frames, frame masks and latents
    (`audio_inputs.py`), patches with positions and an image large enough for a recogniser (`vision_inputs.py`)."""
    transformers = pytest.importorskip("transformers")
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    if model_type == "musicgen":
        try:
            transformers.CONFIG_MAPPING["musicgen"]()
        except Exception as error:  # transformers 5.13 cannot make MusicGen's default config
            pytest.skip(f"MusicGen's default config: {type(error).__name__}")
    tiny = tiny_model(model_type)
    with torch.no_grad():
        out = tiny.model(**tiny.inputs)
    assert any(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor)), model_type
    text = getattr(tiny.model.config, "text_config", tiny.model.config)
    sections = (getattr(text, "rope_parameters", None) or {}).get("mrope_section")
    if model_type == "glm4v_text":
        assert sections is not None and sum(sections) == text.hidden_size // text.num_attention_heads // 2 == 4
    if model_type == "emu3":
        assert tiny.model_class == "Emu3ForCausalLM"
    if model_type == "videomae":
        assert tiny.inputs["pixel_values"].dim() == 5
    if model_type == "udop":
        box = tiny.inputs["bbox"]
        assert box.shape[-1] == 4 and (box[..., 2:] >= box[..., :2]).all()
    if model_type == "lxmert":
        assert tiny.inputs["visual_feats"].shape[-1] == tiny.model.config.visual_feat_dim


def test_a_fixed_sample_of_model_types_builds_tiny_and_runs():
    for model_type in SAMPLE:
        tiny = tiny_model(model_type)
        size = sum(p.numel() for p in tiny.model.parameters())
        assert size < 3_000_000, (model_type, size)
        zero = [n for n, p in tiny.model.named_parameters() if p.is_floating_point() and not p.any()]
        assert zero == [], (model_type, zero)  # drawn at random: no branch switched off
        with torch.no_grad():
            out = tiny.model(**tiny.inputs)
        assert any(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor)), model_type
        again = tiny_model(model_type)  # the same seed: the same weights and inputs
        first = next(iter(tiny.model.state_dict().values()))
        assert torch.equal(first, next(iter(again.model.state_dict().values()))), model_type


def test_a_model_type_that_cannot_be_built_says_why():
    with pytest.raises(KeyError):
        tiny_model("no_such_model_type")


def run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lrpgraph", "coverage", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def test_cli_explains_verifies_and_resumes(tmp_path):
    rows = tmp_path / "rows.jsonl"
    result = run("--transformers", "llama,vit", "--workers", "2", "--rows", str(rows), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = {r["model_type"]: r for r in json.loads(result.stdout)["model_types"]}
    for model_type in ("llama", "vit"):
        row = report[model_type]
        assert row["built"] and row["explained"] and row["verified"] and row["error"] == "", row
        assert row["verified_in"] == "float64" and row["max_error"] < 1e-4 and row["traced"] == "export"
        assert row["gradient_seconds"] > 0 and row["warm_seconds"] > 0
    assert len(rows.read_text().splitlines()) == 2
    result = run("--transformers", "llama,vit,no_op_model", "--rows", str(rows))
    assert result.returncode == 1 and "unknown model type(s) no_op_model" in result.stderr
    result = run("--transformers", "vit,llama", "--rows", str(rows), "--format", "md")  # both done: nothing runs
    assert result.returncode == 0 and len(rows.read_text().splitlines()) == 2
    assert "**2 model types run; 2 built (100.0%); 2 explained (100.0% of built); 2 verified" in result.stdout


def test_audio_candidates_read_frame_widths_hops_and_codebooks_from_the_config():
    """Features as wide as a stacked frame (the mel count ×2 and ×4, a width the config names), a frame mask as long
    as the frames, a wave of whole hops in both layouts, a text column beside the codebooks."""
    import inspect
    from types import SimpleNamespace

    from lrpgraph.tools.audio_inputs import audio_candidates

    def forward(input_features, input_features_mask, input_values=None, input_ids=None):
        pass

    params = inspect.signature(forward).parameters
    codec = SimpleNamespace(downsampling_ratios=[2, 4, 5, 8], channels=1)  # a hop of 320 samples
    config = SimpleNamespace(num_mel_bins=80, input_size=560, sub_configs={"codec": None}, codec=codec,
                             num_codebooks=3, vocab_size=50, codebook_vocab_size=20)  # fmt: skip
    found = audio_candidates(params, config, batch=2, length=8)
    features = [c for c in found if "input_features" in c]
    assert {c["input_features"].shape[-1] for c in features[::2]} == {560, 80, 128, 160, 320}
    assert all(c["input_features_mask"].shape == (2, c["input_features"].shape[1]) for c in features[::2])
    waves = [c["input_values"].shape for c in found if "input_values" in c]
    assert (2, 1600) in waves and (2, 1, 1600) in waves
    ids = next(c["input_ids"] for c in found if "input_ids" in c)
    assert ids.shape == (2, 8, 4) and int(ids.max()) < 20


def test_vision_candidates_read_grids_positions_and_image_shapes_from_the_config():
    """A grid tower's flattened patches (channels × temporal patch × patch², a grid of whole merges), patches with
    their (x, y) on a grid of whole pooling windows, a recogniser's image of (height, width)."""
    import inspect
    from types import SimpleNamespace

    from lrpgraph.tools.vision_inputs import image_shape, vision_candidates

    def tower(pixel_values, grid_thw):
        pass

    vision = SimpleNamespace(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, num_channels=3)
    first = vision_candidates(inspect.signature(tower).parameters, vision, vision, batch=2)[0]
    assert first["pixel_values"].shape == (16, 3 * 2 * 14 * 14) and first["grid_thw"].tolist() == [[1, 4, 4]]

    def positioned(pixel_values, pixel_position_ids):
        pass

    vision = SimpleNamespace(patch_size=16, pooling_kernel_size=3)
    found = vision_candidates(inspect.signature(positioned).parameters, vision, vision, batch=2)
    where = next(c["pixel_position_ids"] for c in found if "pixel_position_ids" in c)
    assert where.shape == (2, 36, 2)
    assert {tuple(p) for p in where[0].tolist()} == {(x, y) for x in range(6) for y in range(6)}
    assert image_shape(SimpleNamespace(image_size=[32, 128])) == (32, 128)


def test_shrunk_keeps_a_classifiers_labels_and_the_sizes_held_as_multiples():
    """A classifier's labels by number are not a dict over the layers (two labels stay two); sizes a config holds as
    a second name or a multiple of another shrink with it (xLSTM's embedding_dim and num_blocks, Zamba's attention
    width of twice the hidden one); a head of both latent-attention parts stays their sum (Dots 3); layers that
    reuse earlier layers' keys are none in a tiny model (Gemma 3n); Bailing's expert groups are one."""
    config = {"model_type": "x", "num_hidden_layers": 6, "id2label": {"0": "no", "1": "yes"},
              "label2id": {"no": 0, "yes": 1}, "hidden_size": 4096, "embedding_dim": 4096, "num_blocks": 6,
              "attention_hidden_size": 8192, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "head_dim": 192,
              "num_kv_shared_layers": 3, "num_expert_group": 8}  # fmt: skip
    small = shrunk(config)
    assert small["id2label"] == {"0": "no", "1": "yes"} and small["label2id"] == {"no": 0, "yes": 1}
    assert (small["hidden_size"], small["embedding_dim"], small["attention_hidden_size"]) == (32, 32, 64)
    assert small["num_blocks"] == small["num_hidden_layers"] == 2
    assert small["head_dim"] == small["qk_nope_head_dim"] + small["qk_rope_head_dim"] == 16
    assert small["num_kv_shared_layers"] == 0 and small["num_expert_group"] == 1
    assert shrunk({**config, "embedding_dim": 128})["embedding_dim"] == 128  # another size: left as it is


def test_shrunk_sets_the_counts_a_config_leaves_unset_only_when_asked():
    """DeepSeek-V2's and Dots1's experts, their top-k and groups, ESM's padding id default to None (a checkpoint
    sets them; their models do not run without): the "counts set" shrink fills them, the others leave them."""
    config = {"model_type": "x", "n_routed_experts": None, "num_experts_per_tok": None, "top_k_experts": None,
              "n_group": None, "topk_group": None, "n_shared_experts": None, "moe_intermediate_size": None,
              "pad_token_id": None, "sliding_window": None}  # fmt: skip
    assert shrunk(config) == config
    small = shrunk(config, Shrink(unset=True))
    assert small["n_routed_experts"] == 4 and small["num_experts_per_tok"] == small["top_k_experts"] == 2
    assert small["n_group"] == small["topk_group"] == small["n_shared_experts"] == small["pad_token_id"] == 1
    assert small["moe_intermediate_size"] == 64 and small["sliding_window"] is None  # not a count


@pytest.mark.parametrize(
    "model_type, shrink",
    [
        ("pe_audio", "tiny"),  # text and a wave at once
        ("voxtral_realtime", "tiny"),  # text and audio features at once
        ("deepseek_v2", "counts set"),
        ("dots1", "counts set"),
        ("esm", "counts set"),
        ("zamba2", "tiny"),
        ("xlstm", "tiny"),
        ("gemma3n_text", "tiny"),
        ("dots3_note_text", "filled again"),  # its validator's head sizes, filled in again from the shrunk ones
        ("d_fine", "filled again"),
        ("blip_2_qformer", "tiny"),  # queries and the states they attend to, nothing else
        ("nemotron3_5_transcribe_word_timestamp", "tiny"),  # embeddings only
        ("gemma3n_audio", "tiny"),  # mel frames and a boolean mask
        ("xmod", "tiny"),  # the language of each sample
        ("oneformer", "depth kept"),  # a task's text tokens
        ("audioflamingo3_encoder", "tiny"),  # an optional frame mask it needs
        ("rf_detr", "tiny"),  # an image of whole windows
        ("decision_transformer", "tiny"),  # a trajectory of states, actions, returns and time steps
        ("seggpt", "tiny"),  # a prompt image and mask stacked above the image
        ("sam", "tiny"),  # the vision encoder's output channels at the prompt encoder's width
        ("sam2_hiera_det_model", "tiny"),  # stage widths from the hidden width, 64 × 64 positions
    ],
)
def test_model_types_beyond_the_first_guesses_build(model_type, shrink):
    """Types the builder reached this stop (issue 28, "≥ 90% build"), each through the rung or layout that made it."""
    transformers = pytest.importorskip("transformers")
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    tiny = tiny_model(model_type)
    assert tiny.shrink.name == shrink, tiny.shrink
    with torch.no_grad():
        out = tiny.model(**tiny.inputs)
    assert any(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor)), model_type


@pytest.mark.parametrize(
    "model_type, count", [("blip-2", 32), ("instructblip", 32), ("instructblipvideo", 64), ("kosmos-2", 64)]
)
def test_an_image_is_read_where_its_placeholders_are(model_type, count):
    """BLIP-2 and InstructBLIP place their Q-Former's 32 queries where the text holds the image token (None in the
    config: the processor sets it), Kosmos-2 its 64 latents where image_embeds_position_mask says: the tiny inputs
    hold them, so the image changes the output (without them the model ignores it); InstructBLIP-Video's for each
    of its 2 frames."""
    transformers = pytest.importorskip("transformers")
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    tiny = tiny_model(model_type)
    ids, config = tiny.inputs["input_ids"], tiny.model.config
    if model_type == "kosmos-2":
        assert tiny.inputs["image_embeds_position_mask"].sum(1).tolist() == [count, count]
    else:
        token = getattr(config, "image_token_index", None) or config.video_token_index
        assert (ids == token).sum(1).tolist() == [count, count]
        assert token == config.text_config.vocab_size - 1

    def logits(inputs):  # the language model's output (nested in InstructBLIP's)
        with torch.no_grad():
            out = tiny.model(**inputs)
        out = getattr(out, "language_model_outputs", None) or out
        return next(v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point())

    other = {**tiny.inputs, "pixel_values": torch.randn_like(tiny.inputs["pixel_values"])}
    assert not torch.allclose(logits(tiny.inputs), logits(other))


def test_a_worker_that_dies_after_building_still_reports_what_it_built():
    """A type whose explain crashes its worker or runs out of time was built: its row says so, and which stage did
    not end; one that died before building says only why."""
    from lrpgraph.tools.model_types import TypeRow, failed

    built = TypeRow("sam", built=True, model_class="SamModel", stage="explain")
    row = failed(built, "sam", "timeout", "over 300 s")
    assert row.built and row.model_class == "SamModel" and row.stage == "timeout"
    assert row.error == "explain: worker over 300 s"
    row = failed(None, "sam", "crash", "exit code -9")
    assert not row.built and row.stage == "crash" and row.error == "worker exit code -9"


def test_candidates_for_spectrogram_images_windowed_backbones_and_two_modalities():
    """CLAP's spectrogram as a one-channel image as long as its side; an image of two patches a side in each of a
    windowed backbone's windows (RF-DETR: 4 windows a side of 14-pixel patches: 112); a forward that needs text and
    a wave at once gets both."""
    import inspect
    from types import SimpleNamespace

    from lrpgraph.tools.audio_inputs import audio_candidates
    from lrpgraph.tools.tiny import candidate_inputs
    from lrpgraph.tools.vision_inputs import vision_candidates

    def clap(input_ids, input_features):
        pass

    config = SimpleNamespace(num_mel_bins=64, spec_size=256, sub_configs={})
    found = audio_candidates(inspect.signature(clap).parameters, config, batch=2, length=8)
    assert (2, 1, 256, 64) in [tuple(c["input_features"].shape) for c in found]

    def detector(pixel_values):
        pass

    backbone = SimpleNamespace(num_windows=4, patch_size=14)
    vision = SimpleNamespace(image_size=32, patch_size=16, backbone_config=backbone)
    found = vision_candidates(inspect.signature(detector).parameters, vision, vision, batch=2)
    assert found[-1]["pixel_values"].shape == (2, 3, 112, 112)

    class Both(torch.nn.Module):
        def forward(self, input_ids, input_values):
            pass

    found = candidate_inputs(Both(), SimpleNamespace(vocab_size=100))
    both = [c for c in found if {"input_ids", "input_values"} <= set(c)]
    assert both and all(c["input_ids"].shape == (2, 8) and c["input_values"].shape[0] == 2 for c in both)
