"""Tiny random-weight models for any model type transformers registers, built from its config class alone.

`tiny_model(model_type)` shrinks the config class's defaults (layers, widths, heads, experts, the sub-configs of
composite models; per-layer lists cut to the layers kept, one of each kind), picks the model class (a task head
where one exists, else the base model), and makes inputs from the forward signature and the config; where that
fails it tries gentler shrinks (`LADDER`). Used by `lrpgraph coverage --transformers`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .audio_inputs import audio_candidates
from .vision_inputs import image_shape, vision_candidates

LENGTH = 8
BATCH = 2
MAX_PARAMETERS = 40_000_000  # a gentler shrink that leaves more than this is not tiny: refused

# Task heads, most wanted first (each explains a logit of a task), the base model last.
HEADS_BY_PREFERENCE = (
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "MODEL_FOR_CTC_MAPPING_NAMES",
    "MODEL_MAPPING_NAMES",
)


@dataclass(frozen=True)
class Shrink:
    """How far to shrink (`name` says it in reports): None keeps that kind of field as the config class has it."""

    name: str = "tiny"
    layers: int | None = 2
    width: int | None = 32
    heads: int = 4
    head_dim: int | None = 8
    ffn: int | None = 64
    experts: int = 4
    vocab: int = 1024
    unset: bool = False  # counts the config leaves to a checkpoint (None) set: experts, their top-k and groups
    rederive: int = 0  # what the config class derives (beyond its fields, or filled in where None) left out, to be
    # derived again from the shrunk fields: 1 in the config, 2 in its sub-configs too


# Tried in order until a model builds and runs: tiny; depth kept (hybrids whose layer kinds follow a period);
# wide enough for heads of their default size; widths kept (models whose widths are tied by rules the field
# names do not show).
LADDER = (
    Shrink(),
    Shrink("depth kept", layers=None),
    Shrink("default heads", width=512, head_dim=None),  # code that fixes rotary sections by head size
    Shrink("widths kept", width=None, head_dim=None, ffn=None, heads=64),
    Shrink("counts set", unset=True),  # defaults no model runs on (a mixture of None experts, top-k None)
    Shrink("filled again", head_dim=16, rederive=1),  # sizes and lists derived from others (D-FINE, Dots 3)
    Shrink("filled again below", head_dim=16, rederive=2),  # in a composite's text config (Qwen 4 Exp)
)

_LAYERS = re.compile(r"^(num_hidden_layers|num_layers|n_layers?|n_layer|depth|encoder_layers|decoder_layers)$|_layers$")
_NOT_LAYERS = re.compile(r"conv|feat_extract|tdnn|adapter|_output_layers$|_input_layers$|mlp_only")
_HEADS = re.compile(r"(^|_)(heads|n_head|num_heads|attention_heads|n_heads)$")
_KV_HEADS = re.compile(r"(key_value|kv)_heads$|^n_kv_heads$|^num_kv_heads$")
_HEAD_DIM = re.compile(r"(^|_)head_dim$|_lora_rank$|^attention_head_size$|^d_kv$|^kv_channels$|^d_head$|^rotary_dim$")
_WIDTH = re.compile(
    r"^(hidden_size|d_model|n_embd|n_embed|embed_dim|hidden_dim|model_dim|dim|d_embed|embedding_size|emb_dim|"
    r"word_embed_proj_dim|projection_dim|proj_dim|d_latents)$|_(hidden_size|d_model|embed_dim|hidden_dim)$|"
    r"^hidden_size_(global|per_layer_input)$"
)
_VOCAB = re.compile(r"vocab|^num_embeddings$")  # other tables of ids: entities, hashed n-grams, per-layer inputs
_FFN = re.compile(r"intermediate_size$|ffn_dim$|^d_ff$|^n_inner$|mlp_dim$|ffn_hidden_size$|^inner_dim$|^d_inner$")
_EXPERTS = re.compile(r"^(num_experts|num_local_experts|n_routed_experts|moe_num_experts|num_routed_experts)$")
_TOP_K = re.compile(
    r"^(num_experts_per_tok|moe_topk|top_k|num_selected_experts|moe_k|num_experts_per_token|top_k_experts)$"
)
_GROUPS = re.compile(r"^(mamba_)?n_?groups?$|^mamba_ngroups$|^topk_group$|^num_expert_group$")
_TOKEN_ID = re.compile(r"_(token_id|token_index|id)$")
# sizes the config holds as a multiple of another (when the defaults show it): they shrink with it
_MULTIPLES = (("embedding_dim", "hidden_size", 1), ("num_blocks", "num_hidden_layers", 1),
              ("attention_hidden_size", "hidden_size", 2))  # fmt: skip
_LABELS = ("id2label", "label2id")  # a classifier's labels by number: not a dict over the layers
_LAYER_INDICES = re.compile(r"layer.*(ids|indices|idx|index|layers?)$|^out_indices$")


_STAGE_WIDTHS = ("hidden_sizes", "embed_dims", "dims", "widths", "embed_dim", "channels", "hidden_dims", "conv_dim")


def _ints(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _heads(value: int, most: int) -> int:
    """A head count made small, kept a power of two so that tiny widths divide by it."""
    return value if value <= 1 else min(most, 4 if value >= 4 else 2)


def _kept_layers(depth: int, values: dict[str, Any], least: int) -> list[int]:
    """Which of `depth` layers to keep: the first of each kind every per-layer list names (a list of each layer's
    own index, such as a default with no layer sharing, names no kinds), then the first ones until there are
    `least`."""
    keep: set[int] = set()
    for value in values.values():
        if isinstance(value, list) and len(value) == depth and value != list(range(depth)):
            seen: dict[str, int] = {}
            for i, kind in enumerate(value):
                seen.setdefault(repr(kind), i)
            keep.update(seen.values())
    for i in range(depth):
        if len(keep) >= least:
            break
        keep.add(i)
    return sorted(keep)


def _kv_heads(value: int, heads: int | None, how: Shrink) -> int:
    """Key-value heads: one stays one, as many as the heads become the shrunk heads, fewer become 2 (grouped)."""
    return 1 if value == 1 else (_heads(value, how.heads) if heads and value >= heads else 2)


def _nearest(index: int, depth: int, keep: list[int]) -> int:
    index = index + depth if index < 0 else index
    return min(range(len(keep)), key=lambda j: abs(keep[j] - index))


def _resnet_backbone(timm: dict[str, Any], how: Shrink) -> dict[str, Any]:
    """transformers' ResNet, shrunk, in place of a timm backbone's config: the same input channels and stages."""
    import transformers

    resnet = shrunk({**transformers.ResNetConfig().to_dict(), "num_channels": timm.get("num_channels", 3)}, how)
    resnet.pop("out_features", None)  # named by out_indices instead
    return {**resnet, "out_indices": timm.get("out_indices") or [1, 2, 3, 4]}


def shrunk(values: dict[str, Any], how: Shrink = Shrink()) -> dict[str, Any]:
    """A config's `to_dict()` with its size fields made small; sub-config dicts shrunk the same way; lists and
    dicts that run over the layers cut to the layers kept, and layer indices moved to match."""
    out = dict(values)
    heads = next((v for k, v in values.items() if _HEADS.search(k) and isinstance(v, int) and v > 0), None)
    top = max((v for k, v in values.items() if _TOKEN_ID.search(k) and isinstance(v, int)), default=0)
    depths: dict[int, list[int]] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value.get("model_type") == "timm_backbone":  # timm needs torchvision
            out[key] = _resnet_backbone(value, how)
        elif isinstance(value, dict) and "model_type" in value:
            out[key] = shrunk(value, how)
        elif isinstance(value, dict) and "mrope_section" in value and how.head_dim:
            out[key] = {**value, "mrope_section": _sections(value["mrope_section"], how.head_dim // 2)}
        elif key == "vocab_size" and value is None:
            out[key] = how.vocab  # a vocabulary left to the tokenizer (ESM)
        elif key in ("prediction_length", "context_length") and value is None:
            out[key] = 4  # a forecast the config leaves to a checkpoint: 4 steps from 4
        elif key == "use_cache":
            out[key] = False  # one forward is explained: no cache to build (some hybrids cannot build one)
        elif key == "depths" and isinstance(value, list):
            out[key] = [1] * len(value)
        elif key in _STAGE_WIDTHS and how.width and _ints(value) and max(value) > how.width:
            out[key] = [max(8, round(v * how.width / max(value) / 4) * 4) for v in value]
        elif key == "num_heads" and isinstance(value, list):
            out[key] = [_heads(v, how.heads) for v in value]
        elif key.endswith("_per_layer") and _KV_HEADS.search(key.removesuffix("_per_layer")) and _ints(value):
            out[key] = [_kv_heads(v, heads, how) for v in value]  # each layer's key-value heads (Sapiens 2)
        elif value is None and how.unset and (count := _unset_count(key, how)) is not None:
            out[key] = count
        elif isinstance(value, bool) or not isinstance(value, int):
            continue
        elif _KV_HEADS.search(key):
            out[key] = _kv_heads(value, heads, how)
        elif _HEADS.search(key):
            out[key] = _heads(value, how.heads)
        elif _HEAD_DIM.search(key) and how.head_dim:
            out[key] = min(value, how.head_dim)
        elif key == "num_time_features" and value == 0:
            out[key] = 1  # one time feature, so that no input of a forecaster is empty
        elif key == "label_length":
            out[key] = min(value, 2)  # the decoder's start, taken from the end of a context of 4
        elif key in ("num_filters", "base_channels", "latent_channels") and how.width:
            out[key] = min(value, 8 if key == "num_filters" else 32)  # a convolutional stack's first width, which
            # later stages multiply (32: group norms of 32 groups)
        elif key == "num_kv_shared_layers":
            out[key] = 0  # layers reusing earlier layers' keys: the kinds kept cannot stand on both sides of it
        elif key == "num_queries":
            out[key] = min(value, 8)  # a detector's queries: no more than a tiny image's anchors
        elif key in ("num_frames", "frames_per_clip"):
            out[key] = min(value, 4)  # a video of a few frames (two tubelets of two)
        elif _EXPERTS.search(key):
            out[key] = min(value, how.experts)
        elif _GROUPS.search(key):
            out[key] = 1
        elif _TOP_K.search(key):
            out[key] = min(value, 2)
        elif key == "vocab_size" and value > how.vocab:
            out[key] = max(how.vocab, top + 1)
        elif _VOCAB.search(key) and value > how.vocab:
            out[key] = how.vocab
        elif _LAYERS.search(key) and not _NOT_LAYERS.search(key) and how.layers and value > how.layers:
            keep = depths.setdefault(value, _kept_layers(value, values, how.layers))
            out[key] = len(keep)
        elif _WIDTH.search(key) and how.width and value > how.width:
            out[key] = how.width
        elif _FFN.search(key) and how.ffn and value > how.ffn:
            out[key] = how.ffn
    for depth, keep in depths.items():
        for key, value in values.items():
            if isinstance(value, list) and value == list(range(depth)):
                out[key] = list(range(len(keep)))  # each layer's own index, renumbered
            elif isinstance(value, list) and len(value) == depth:
                out[key] = [out[key][i] for i in keep]  # as shrunk above (a stage's width, its depth of 1)
            elif isinstance(value, list) and _LAYER_INDICES.search(key) and value:
                if all(isinstance(i, int) and -depth <= i < depth for i in value):
                    out[key] = list(dict.fromkeys(_nearest(i, depth, keep) for i in value))
            elif (
                key not in _LABELS
                and isinstance(value, dict)
                and value
                and all(str(k).isdigit() and int(k) < depth for k in value)
            ):
                out[key] = {f"{keep.index(int(k)):02d}": v for k, v in value.items() if int(k) in keep}
    if depths:  # layers were cut: a backbone's outputs named by layer default again (stages are all kept)
        for key in ("out_features", "out_indices", "stage_names"):
            out.pop(key, None)
    _state_space_heads(out)
    _widths_read_elsewhere(values, out)
    _widths_between_parts(values, out)
    _image_positions(out)
    _image_token(out)
    for alias, of, times in _MULTIPLES:
        size, other = values.get(alias), values.get(of)
        if isinstance(size, int) and isinstance(other, int) and size == times * other:
            out[alias] = times * out[of]  # the same size by a second name (xLSTM), or twice it (Zamba)
    if "lags_sequence" in out:
        out.pop("feature_size", None)  # a forecaster's input width, derived from the features: derived again
    _unset_heads(out, heads)
    if isinstance(out.get("qk_nope_head_dim"), int) and isinstance(out.get("qk_rope_head_dim"), int):
        out["qk_head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]  # multi-head latent attention
        if values.get("head_dim") == values["qk_nope_head_dim"] + values["qk_rope_head_dim"]:
            out["head_dim"] = out["qk_head_dim"]  # a head of both parts, as the config had it
    return out


def _image_token(out: dict[str, Any]) -> None:
    """An image placeholder token the config leaves to its processor (None) set to the text vocabulary's last id,
    where the config says how many an image takes (so that `_with_image_tokens` can place them)."""
    text = out.get("text_config")
    vocab = text.get("vocab_size") if isinstance(text, dict) else None
    if not isinstance(vocab, int) or not any(isinstance(out.get(k), int) for k in _TOKENS_PER_IMAGE):
        return
    for key in _IMAGE_TOKENS:
        if key in out and out[key] is None:
            out[key] = vocab - 1


def _unset_count(key: str, how: Shrink) -> int | None:
    """A value for a count the config leaves unset, or None for a field that is not such a count."""
    if _EXPERTS.search(key):
        return how.experts
    if _TOP_K.search(key):
        return 2
    if _GROUPS.search(key) or key in ("n_shared_experts", "pad_token_id"):
        return 1  # one group, one shared expert; padding id 1 (ESM compares the ids with it)
    if _FFN.search(key):
        return how.ffn
    return None


def _widths_read_elsewhere(values: dict[str, Any], out: dict[str, Any]) -> None:
    """Lists of channel counts that repeat a width shrunk beside them, made to match: a detector's decoder inputs of
    its model width ([256, 256, 256] beside d_model 256), its encoder inputs of the backbone's stage widths at the
    stages it reads ([512, 1024, 2048] of hidden_sizes [256, 512, 1024, 2048] at out_indices [2, 3, 4]); groups of
    a convolution that equal a width (Mimi's upsampling: upsample_groups 512 beside hidden_size 512); the widths of
    stages that start at a width, scaled with it (Hiera's embed_dim_per_stage [96, 192, 384, 768] beside
    hidden_size 96: [32, 64, 128, 256])."""
    widths = {v: out[k] for k, v in values.items() if _WIDTH.search(k) and isinstance(v, int) and out[k] != v}
    before, after = values.get("backbone_config"), out.get("backbone_config")
    if isinstance(before, dict) and isinstance(after, dict):
        for old, new in zip(before.get("hidden_sizes") or [], after.get("hidden_sizes") or [], strict=False):
            widths.setdefault(old, new)
    for key, value in values.items():
        if key.endswith("in_channels") and _ints(value) and all(v in widths for v in value) and out[key] == value:
            out[key] = [widths[v] for v in value]
        elif key.endswith("_groups") and isinstance(value, int) and value in widths and out[key] == value:
            out[key] = widths[value]  # a depthwise convolution's groups, one per channel of the width
        elif key.endswith("dim_per_stage") and _ints(value) and value[0] in widths and out[key] == value:
            new, old = widths[value[0]], value[0]
            if all(v * new % old == 0 for v in value):
                out[key] = [v * new // old for v in value]


def _image_positions(out: dict[str, Any]) -> None:
    """An image whose strided patches make more than 64 positions a side made as large as 64 positions (Hiera's
    stride-4 patches of a 1024² image make 256 × 256, which a float64 verify of a tiny model cannot hold)."""
    size, stride = out.get("image_size"), out.get("patch_stride")
    if _ints(size) and _ints(stride) and len(size) == len(stride):
        out["image_size"] = [min(s, 64 * t) for s, t in zip(size, stride, strict=True)]


def _widths_between_parts(values: dict[str, Any], out: dict[str, Any]) -> None:
    """A part's output channels that another part of the composite reads at its width, made that width as shrunk
    (SAM's vision encoder hands 256 channels to the prompt encoder and mask decoder, whose width is 256), with the
    sine and cosine features of its positions that make as many channels (`num_pos_feats`, half of them)."""
    parts = [k for k, v in values.items() if isinstance(v, dict) and "model_type" in v and isinstance(out[k], dict)]
    widths = {
        v: out[part][k]
        for part in parts
        for k, v in values[part].items()
        if _WIDTH.search(k) and isinstance(v, int) and out[part].get(k) != v
    }
    for part in parts:
        value = values[part].get("output_channels")
        if isinstance(value, int) and value in widths and out[part]["output_channels"] == value:
            out[part] = {**out[part], "output_channels": widths[value]}
            if values[part].get("num_pos_feats") == value // 2:
                out[part]["num_pos_feats"] = widths[value] // 2


def _unset_heads(out: dict[str, Any], heads: int | None) -> None:
    """Head fields a config leaves unset (None: a checkpoint sets them) made consistent with the shrunk widths: as
    many key-value heads as heads, heads of the width's share."""
    if not isinstance(heads, int) or heads <= 0:
        return
    heads = out.get("num_attention_heads", heads)
    if "num_key_value_heads" in out and out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = heads
    width = out.get("hidden_size")
    if "head_dim" in out and out["head_dim"] is None and isinstance(width, int) and width > 0:
        out["head_dim"] = width // heads


def _state_space_heads(out: dict[str, Any]) -> None:
    """A state-space mixer's head size set so that heads × head size = expand × width, which Mamba-2 layers
    require."""
    expand = out.get("expand", out.get("mamba_expand"))
    heads = next((k for k in ("mamba_n_heads", "mamba_num_heads", "n_mamba_heads", "num_heads") if k in out), None)
    size = next((k for k in ("mamba_d_head", "mamba_head_dim", "mamba_headdim", "head_dim") if k in out), None)
    width = out.get("hidden_size")
    if isinstance(expand, int) and isinstance(width, int) and heads and size and isinstance(out[heads], int):
        out[size] = expand * width // out[heads]
        if "mamba_d_ssm" in out:
            out["mamba_d_ssm"] = expand * width


def _sections(sections: list[int], total: int) -> list[int]:
    """Rotary sections rescaled to sum to `total`, each at least 1."""
    scaled = [max(1, s * total // sum(sections)) for s in sections]
    scaled[scaled.index(max(scaled))] += total - sum(scaled)
    return scaled


@dataclass
class TinyModel:
    """A built tiny model: its type, the class chosen, the model (eval mode) and the inputs it was run on."""

    model_type: str
    model_class: str
    model: torch.nn.Module
    inputs: dict[str, Any]
    shrink: Shrink


def model_classes(model_type: str) -> list[str]:
    """The model classes transformers registers for `model_type`, task heads first, the base model last."""
    from transformers.models.auto import modeling_auto

    found = []
    for mapping in HEADS_BY_PREFERENCE:
        names = getattr(modeling_auto, mapping).get(model_type)
        for name in [names] if isinstance(names, str) else list(names or ()):
            if name not in found:
                found.append(name)
    return found


def _patches(config: Any, grid: str, generator: torch.Generator) -> dict[str, Any]:
    """One image of 4 × 4 patches (2 × 2 merged), flattened as vision-language towers take them, with its grid."""
    patch = getattr(config, "patch_size", 14)
    frames = getattr(config, "temporal_patch_size", 1) or 1
    channels = getattr(config, "in_channels", None) or getattr(config, "num_channels", None) or 3
    side = 2 * (getattr(config, "spatial_merge_size", 2) or 2)
    patches = torch.randn(side * side, channels * frames * patch * patch, generator=generator)
    return {"hidden_states": patches, grid: torch.tensor([[1, side, side]])}


def tiny_config(model_type: str, how: Shrink = Shrink()) -> Any:
    """The config class's defaults for `model_type` (with those its model's code holds, `_code_defaults`),
    shrunk."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    values = cls().to_dict()
    if how.rederive:
        values = _underived(cls, values, below=how.rederive > 1)
    values = shrunk(_code_defaults(values), how)
    values.pop("transformers_version", None)
    return cls.from_dict(values)


def _underived(cls: Any, values: dict[str, Any], below: bool) -> dict[str, Any]:
    """A config dict without the values its class sets in __post_init__ (widths computed from the hidden size beyond
    its declared fields, fields declared None and filled in), so that building it from the shrunk fields computes
    them again; `below`: in its sub-configs too."""
    import dataclasses

    from transformers import PreTrainedConfig

    if not dataclasses.is_dataclass(cls):
        return values
    base = set(PreTrainedConfig().to_dict())
    unset = {f.name for f in dataclasses.fields(cls) if f.default is None and f.name not in base}
    kept = {f.name for f in dataclasses.fields(cls)} - unset | base
    subs = (getattr(cls, "sub_configs", None) or {}) if below else {}
    return {
        k: _underived(subs[k], v, below) if k in subs and isinstance(v, dict) and isinstance(subs[k], type) else v
        for k, v in values.items()
        if k in kept or k in subs
    }


_MROPE_DEFAULT = re.compile(r"""rope_parameters\.get\(\s*["']mrope_section["']\s*,\s*\[([0-9,\s]+)\]\s*\)""")


@functools.cache
def _modeling_source(model_type: str) -> str:
    """The source of the modeling module beside the config class of `model_type` ('' where there is none); read
    once per process (each shrink of the ladder and each sub-config asks again)."""
    import importlib

    from transformers import CONFIG_MAPPING

    try:
        name = CONFIG_MAPPING[model_type].__module__.replace(".configuration_", ".modeling_")
        return inspect.getsource(importlib.import_module(name))
    except Exception:  # an unknown type, or a config without a modeling module of that name: no defaults from code
        return ""


def _code_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict (and its sub-configs) with the rotary sections its model's code fills in when the config has
    none (`rope_parameters.get("mrope_section", [16, 24, 24])`, sized for the default head), so that shrinking
    rescales them with the head; vision towers' axial rotaries have none."""
    out = {k: _code_defaults(v) if isinstance(v, dict) and "model_type" in v else v for k, v in values.items()}
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "mrope_section" not in rope and rope.get("rope_type") != "axial":
        found = _MROPE_DEFAULT.search(_modeling_source(str(values.get("model_type", ""))))
        if found is not None:
            out["rope_parameters"] = {**rope, "mrope_section": [int(n) for n in found.group(1).split(",")]}
    return out


def _eager_experts(config: Any) -> None:
    """Mixture-of-experts layers as transformers' loop over experts, which runs in float64 (grouped_mm does not)."""
    for sub in (config, *(getattr(config, k, None) for k in getattr(config, "sub_configs", {}))):
        if sub is not None:
            sub._experts_implementation = "eager"


def tiny_model(model_type: str, seed: int = 0, dtype: torch.dtype | None = None) -> TinyModel:
    """A tiny random-weight model of `model_type` and inputs it runs on (the same for the same seed; built with
    `dtype` as the default dtype where given, in float64 with experts as a loop); raises why when no shrink and
    class builds and runs."""
    import transformers

    if model_type not in transformers.CONFIG_MAPPING:
        raise KeyError(f"unknown model type {model_type!r}")
    errors: list[str] = []
    for how in LADDER:
        try:
            config = tiny_config(model_type, how)
        except Exception as error:
            errors.append(f"config: {said(error)}")
            continue
        if dtype == torch.float64:
            _eager_experts(config)
        for name in model_classes(model_type):
            cls = getattr(transformers, name, None)
            if cls is None:
                continue
            try:
                return TinyModel(model_type, name, *_built(cls, _config_for(cls, config), how, seed, dtype), how)
            except Exception as error:
                errors.append(f"{name}: {said(error)}")
    raise RuntimeError(errors[0] if errors else f"no model class for {model_type}")


def _config_for(cls: Any, config: Any) -> Any:
    """The config a model class takes: the composite's own, or its sub-config of the class's config type (MusicGen's
    causal LM takes the composite's decoder config)."""
    wanted = getattr(cls, "config_class", None)
    if wanted is None or isinstance(config, wanted):
        return config
    for name in getattr(config, "sub_configs", {}):
        sub = getattr(config, name, None)
        if isinstance(sub, wanted):
            return sub
    return config


def _built(
    cls: Any, config: Any, how: Shrink, seed: int, dtype: torch.dtype | None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    saved = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        _refuse_large(cls, config, counted=how != LADDER[0])
        torch.manual_seed(seed)
        model = cls(config).eval()
        if dtype == torch.float64:
            model.double()  # parameters and buffers a module makes in a fixed dtype (a float32 BatchNorm) too
        _no_zero_parameters(model, seed)
        errors = []
        for inputs in candidate_inputs(model, config):
            try:
                with torch.no_grad():
                    output = model(**inputs)
                _refuse_all_masked(model, inputs, output)
                return model, inputs
            except Exception as error:
                errors.append(error)
        raise errors[0] if errors else ValueError(f"no inputs known for {_signature(model)}")
    finally:
        torch.set_default_dtype(saved)


def _refuse_all_masked(model: torch.nn.Module, inputs: dict[str, Any], output: Any) -> None:
    """Raise where a boolean mask of all True masks every position (a mask whose True marks padding, Gemma 3n's
    audio_mel_mask): the output is the same for other values of the first floating-point input."""
    if not any(isinstance(v, torch.Tensor) and v.dtype == torch.bool and v.all() for v in inputs.values()):
        return
    name = next((k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    if name is None:
        return
    other = torch.randn(inputs[name].shape, generator=torch.Generator().manual_seed(1), dtype=inputs[name].dtype)
    with torch.no_grad():
        again = model(**{**inputs, name: other})
    first, second = (next(t for t in _tensors(o) if t.is_floating_point()) for o in (output, again))
    if torch.equal(first, second):
        raise ValueError(f"the output does not depend on {name}: the boolean mask given masks every position")


def _tensors(output: Any) -> list[torch.Tensor]:
    import torch.utils._pytree as pytree

    values = output.to_tuple() if hasattr(output, "to_tuple") else output
    return [t for t in pytree.tree_leaves(values) if isinstance(t, torch.Tensor)]


def _no_zero_parameters(model: torch.nn.Module, seed: int) -> None:
    """Draw every parameter that its init left all zero (routers, gates, layer scales, output projections, biases)
    at random, so that no branch of the tiny model is switched off and verifying it tests every rule."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point() and parameter.numel() and not parameter.any():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.copy_(0.02 * noise)


def _refuse_large(cls: Any, config: Any, counted: bool) -> None:
    """Count the parameters on the meta device (no memory, no init) and refuse a model that is not tiny; a model
    that cannot be built there is built for real only where every width was shrunk (`counted` False)."""
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in cls(config).parameters())
    except Exception as error:
        if counted:
            raise ValueError(f"its size cannot be counted on the meta device ({said(error)})") from None
        return
    if size > MAX_PARAMETERS:
        raise ValueError(f"{size / 1e6:.0f}M parameters after shrinking: not tiny")


def said(error: BaseException, most: int = 300) -> str:
    """An error as one line: its type and its message, whitespace collapsed, at most `most` characters of it."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:most]}"


def _signature(model: torch.nn.Module) -> str:
    return f"{type(model).__name__}.forward({', '.join(inspect.signature(model.forward).parameters)})"


def _sub(config: Any, *names: str) -> Any:
    for name in names:
        sub = getattr(config, name, None)
        if sub is not None:
            return sub
    return config


def _series(params: Any, config: Any, generator: torch.Generator) -> list[dict[str, Any]]:
    """A time series: `past_values` over the context (and the lags), with what forecasting models read beside it
    (time features, observed masks, the future's features; paddings and a frequency for TimesFM)."""
    context = getattr(config, "context_length", None) or 64
    if "past_values_padding" in params:  # TimesFM: patches of patch_length
        patch = getattr(config, "patch_length", 32)
        length = 2 * patch
        inputs = {
            "past_values": torch.randn(BATCH, length, generator=generator),
            "past_values_padding": torch.zeros(BATCH, length, dtype=torch.long),
        }
        return [{**inputs, "freq": torch.zeros(BATCH, 1, dtype=torch.long)} if "freq" in params else inputs]
    if "past_time_features" not in params:  # PatchTST and PatchTSMixer: [batch, context, channels]
        channels = getattr(config, "num_input_channels", 1)
        return [{"past_values": torch.randn(BATCH, context, channels, generator=generator)}]
    length = context + max(getattr(config, "lags_sequence", None) or [0])
    width = getattr(config, "input_size", 1)
    features = getattr(config, "num_time_features", 0) + getattr(config, "num_dynamic_real_features", 0)
    shape = (BATCH, length) if width == 1 else (BATCH, length, width)
    future = getattr(config, "prediction_length", None) or 4
    inputs = {
        "past_values": torch.randn(shape, generator=generator),
        "past_time_features": torch.randn(BATCH, length, features, generator=generator),
        "past_observed_mask": torch.ones(shape),
        "future_values": torch.randn((BATCH, future, *shape[2:]), generator=generator),
        "future_time_features": torch.randn(BATCH, future, features, generator=generator),
    }
    return [inputs]


def _boxes(width: int, generator: torch.Generator) -> torch.Tensor:
    """A box per token in [0, 1], [BATCH, LENGTH, width]: (x0, y0, x1, y1) with x0 ≤ x1 and y0 ≤ y1 for 4 numbers,
    else points anywhere (a quadrilateral's 8)."""
    if width != 4:
        return torch.rand(BATCH, LENGTH, width, generator=generator)
    corner = torch.rand(BATCH, LENGTH, 2, generator=generator) / 2
    return torch.cat([corner, corner + torch.rand(BATCH, LENGTH, 2, generator=generator) / 2], -1)


# the optional inputs given beside the required ones, in turn: none, then the states cross-attention reads
_OPTIONAL_FLOATS = ((), ("encoder_hidden_states",))


def _floats(
    params: Mapping[str, inspect.Parameter], config: Any, generator: torch.Generator, optional: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Float inputs [BATCH, LENGTH, width] for the forward's required embeddings and states (and the `optional`
    ones), each as wide as the config says (`_width`): a forward of nothing else (a Q-Former's queries, a decoder
    over given embeddings)."""
    found = {}
    for name, param in params.items():
        if param.default is inspect.Parameter.empty or name in optional:
            width = _width(name, config)
            if width:
                found[name] = torch.randn(BATCH, LENGTH, width, generator=generator)
    return found


def _trajectory(params: Mapping[str, inspect.Parameter], config: Any, generator: torch.Generator) -> list[dict]:
    """An offline-RL trajectory (Decision Transformer): states and actions as wide as the config says, rewards,
    returns-to-go and time steps."""
    state, action = getattr(config, "state_dim", None), getattr(config, "act_dim", None)
    if not {"states", "actions", "returns_to_go", "timesteps"} <= set(params) or not (state and action):
        return []
    steps = {
        "states": torch.randn(BATCH, LENGTH, state, generator=generator),
        "actions": torch.randn(BATCH, LENGTH, action, generator=generator),
        "returns_to_go": torch.randn(BATCH, LENGTH, 1, generator=generator),
        "timesteps": torch.arange(LENGTH).expand(BATCH, LENGTH).contiguous(),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
    }
    if "rewards" in params:
        steps["rewards"] = torch.randn(BATCH, LENGTH, 1, generator=generator)
    return [steps]


_PROMPTED = ("pixel_values", "prompt_pixel_values", "prompt_masks")
_IMAGE_TOKENS = ("image_token_id", "image_token_index", "video_token_index")
_TOKENS_PER_IMAGE = ("num_query_tokens", "image_seq_length", "mm_tokens_per_image", "latent_query_num")


def _with_image_tokens(inputs: dict[str, Any], config: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Text and an image with the image's placeholder tokens first in each row, as many as the config says an image
    takes (a Q-Former's queries: BLIP-2), for a model that reads the image only where its tokens are, or where a
    mask says (Kosmos-2's image_embeds_position_mask)."""
    marked = "image_embeds_position_mask" in params
    token = next((getattr(config, k) for k in _IMAGE_TOKENS if isinstance(getattr(config, k, None), int)), None)
    count = next((getattr(config, k) for k in _TOKENS_PER_IMAGE if isinstance(getattr(config, k, None), int)), 0)
    if (token is None and not marked) or not count:
        return []
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    count *= pixels.shape[1] if pixels.dim() == 5 else 1  # a video: each frame's tokens
    places = torch.full((ids.shape[0], count), 3 if token is None else token, dtype=ids.dtype)
    ids = torch.cat([places, ids], 1)
    found = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if marked:
        found["image_embeds_position_mask"] = (torch.arange(ids.shape[1]) < count).long().expand_as(ids)
    if "qformer_input_ids" in params:
        found["qformer_input_ids"] = inputs["input_ids"]  # the Q-Former's own text, without placeholders
    return [found]


def _width(name: str, config: Any) -> int | None:
    """The width of a required float input the forward names (embeddings, hidden states, mel frames), read from the
    config: `<stem>_dim`, `max_<stem>_dim`, `input_feat_size`, else the hidden size; None for other names."""
    stem = re.sub(r"(_embeds|_hidden_states|_mel|_values)$", "", name)
    if stem == name and name != "hidden_states":
        return None
    fields = (f"{stem}_dim", f"max_{stem}_dim", f"{stem}_hidden_size", "input_feat_size" if stem != name else "")
    for field in (*fields, "hidden_size"):
        width = getattr(config, field, None) if field else None
        if isinstance(width, int) and width > 0:
            return width
    return None


def _combined(found: list[dict[str, Any]], most: int = 64) -> list[dict[str, Any]]:
    """Pairs of the layouts found that name different inputs, merged: a forward that reads two modalities at once
    (text with audio features, a wave with its features), tried after every single layout."""
    pairs = []
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            if not set(a) & set(b) and len(pairs) < most:
                pairs.append({**a, **b})
    return pairs


def candidate_inputs(model: torch.nn.Module, config: Any) -> list[dict[str, Any]]:
    """Inputs for `model.forward` from its signature and `config`, in the layouts to try: token ids with masks
    (and pixels for dual encoders), pixels, audio waves or features; then the layouts of `vision_inputs.py` and
    `audio_inputs.py`."""
    params = inspect.signature(model.forward).parameters
    generator = torch.Generator().manual_seed(1)
    text = _sub(config, "text_config", "decoder", "language_config", "text_encoder", "encoder_config")
    # no vocabulary in the config: characters (Canine reads code points), ids below 256
    vocab = getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None) or 256
    vision = _sub(config, "vision_config", "image_config")
    size = image_shape(vision)[0]
    channels = getattr(vision, "num_channels", None) or 3
    pixels = torch.randn(BATCH, channels, size, size, generator=generator)
    found: list[dict[str, Any]] = []
    decoder = {}
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False) and vocab:
        decoder["decoder_input_ids"] = torch.randint(3, min(vocab, 1000), (BATCH, LENGTH // 2), generator=generator)
    if "input_ids" in params and vocab:
        ids = torch.randint(3, min(vocab, 1000), (BATCH, LENGTH), generator=generator)
        inputs: dict[str, Any] = {"input_ids": ids, **decoder}
        if "attention_mask" in params:
            inputs["attention_mask"] = torch.ones_like(ids)
        found.append(inputs)
        if "pixel_values" in params:
            found.insert(0, {**inputs, "pixel_values": pixels})
        codebooks = getattr(config, "num_codebooks", 1)
        if isinstance(codebooks, int) and codebooks > 1:  # an audio decoder's codebooks as rows (MusicGen)
            rows = torch.randint(3, min(vocab, 1000), (BATCH * codebooks, LENGTH), generator=generator)
            found.append(
                {
                    "input_ids": rows,
                    **({"attention_mask": torch.ones(BATCH, LENGTH)} if "attention_mask" in params else {}),
                }
            )
    if "bbox" in params and found and "input_ids" in found[-1]:  # a document's words with their boxes
        boxes = _boxes(getattr(config, "dim_bbox", 4), generator)
        found += [{**found[-1], "bbox": boxes}, {**found[-1], "bbox": (boxes * 1000).long()}]
    if "pixel_values" in params:
        found.append({"pixel_values": pixels})
    lengths = ("num_frames", "frames_per_clip")
    frames = next((getattr(c, k) for c in (config, vision) for k in lengths if getattr(c, k, None)), 0)
    video = next((name for name in ("pixel_values_videos", "pixel_values") if name in params), None)
    if frames and video:  # a video: frames of images
        clip = torch.randn(BATCH, frames, channels, size, size, generator=generator)
        found.insert(0, {**(found[0] if found and "input_ids" in found[0] else {}), video: clip})
    grid = next((name for name in ("grid_thw", "image_grid_thw") if name in params), None)
    if grid:  # a vision tower of patches, flattened, with their grid
        patches = _patches(config, grid, generator)
        found.append(
            patches if "hidden_states" in params else {"pixel_values": patches.pop("hidden_states"), **patches}
        )
    if "spatial_shapes" in params and "pixel_values" in params:  # patches of images of any shape (NaFlex: SigLIP 2)
        patch = getattr(vision, "patch_size", 16)
        found.insert(
            0,
            {
                "pixel_values": torch.randn(BATCH, 16, channels * patch * patch, generator=generator),
                "pixel_attention_mask": torch.ones(BATCH, 16, dtype=torch.long),
                "spatial_shapes": torch.tensor([[4, 4]] * BATCH),
            },
        )
    if "past_values" in params:
        found += _series(params, config, generator)
    if "input_values" in params:
        wave = torch.randn(BATCH, 1600, generator=generator)
        found += [{"input_values": wave, **decoder}, {"input_values": wave[:, None], **decoder}]
    if "input_features" in params:
        audio = _sub(config, "audio_config", "encoder_config", "encoder")
        bins = next(
            (getattr(c, k) for c in (config, audio) for k in ("num_mel_bins", "feature_size") if getattr(c, k, None)),
            80,
        )
        # 64 frames first (an encoder that subsamples takes any length: Speech2Text's 12000 positions are not
        # tiny); then as many as the encoder's positions take (Whisper accepts exactly those)
        for frames in (64, 2 * (getattr(config, "max_source_positions", None) or 50)):
            features = torch.randn(BATCH, bins, frames, generator=generator)
            found += [{"input_features": features, **decoder}, {"input_features": features.mT.contiguous(), **decoder}]
    found += vision_candidates(params, config, vision, BATCH) + audio_candidates(params, config, BATCH, LENGTH)
    found += _trajectory(params, config, generator)
    if {"prompt_pixel_values", "prompt_masks"} <= set(params):  # SegGPT: a prompt image and its mask stacked above
        height, width = image_shape(vision)  # the image, each half the model's height
        found.append({k: torch.randn(BATCH, channels, height // 2, width, generator=generator) for k in _PROMPTED})
    found += _combined(found)
    found += [f for f in (_floats(params, config, generator, named) for named in _OPTIONAL_FLOATS) if f]
    # first: a model may ignore an image (or video) whose placeholders the text lacks
    found[:0] = [
        t for c in found if "input_ids" in c and "pixel_values" in c for t in _with_image_tokens(c, config, params)
    ]
    variants = []  # tried after every layout: required masks as booleans (masks some models fill with), optional
    # masks named after an input (input_features_mask) given, as long as its steps in either layout
    for inputs in found:
        for name, param in params.items():
            required = param.default is inspect.Parameter.empty
            if required and name not in inputs and name.endswith("_mask") and inputs:
                main = next(iter(inputs.values()))
                inputs[name] = torch.ones(main.shape[:2], dtype=torch.long)  # a required mask: nothing masked
                variants += [{**inputs, name: inputs[name].bool()}, {**inputs, name: ~inputs[name].bool()}]
            source = inputs.get(name.removesuffix("_mask"))
            if not required and name.endswith("_mask") and isinstance(source, torch.Tensor) and source.dim() == 3:
                steps = source.shape[:0:-1]
                variants += [{**inputs, name: torch.ones(len(source), n, dtype=torch.long)} for n in steps]
            if name == "qformer_input_ids" and "input_ids" in inputs and name not in inputs:
                inputs[name] = inputs["input_ids"]
            if name == "task_inputs" and required and isinstance(getattr(config, "task_seq_len", None), int):
                top = getattr(config, "text_encoder_vocab_size", None) or vocab  # a task's text tokens (OneFormer)
                inputs[name] = torch.randint(0, min(top, 1000), (BATCH, config.task_seq_len), generator=generator)
            if name == "lang_ids" and "input_ids" in inputs:
                inputs[name] = torch.zeros(len(inputs["input_ids"]), dtype=torch.long)  # X-MOD: the first language
            # features named after a width of the config: visual_feats of visual_feat_dim, visual_pos of visual_pos_dim
            width = getattr(config, f"{name}_dim", None) or getattr(config, f"{name.removesuffix('s')}_dim", None)
            if param.default in (inspect.Parameter.empty, None) and name not in inputs and isinstance(width, int):
                inputs[name] = torch.rand(BATCH, LENGTH, width, generator=generator)
    return found + variants
