"""Audio inputs for tiny models whose first guesses (a wave of 1600 samples, features of the mel count) do not fit:
features as wide as the config says a frame is (stacked frames and deltas), waves in whole hops of the encoder,
spectrograms and hidden states given as `input_values`, codec latents (`latents`, or `hidden_states`), and a text
column beside audio codebooks.

Every layout is read from the config and its sub-configs; `tiny.candidate_inputs` tries these after its own, so a
model that runs on an earlier guess keeps it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

WAVE = 1600  # samples of the first guess; a hop longer than half of it gets two whole hops


def audio_candidates(params: Mapping[str, inspect.Parameter], config: Any, batch: int, length: int) -> list[dict]:
    """Inputs to try after the first guesses, for a forward with these parameters (`batch` samples, `length` steps
    where a length is free)."""
    generator = torch.Generator().manual_seed(2)
    configs = _configs(config)
    required = {name for name, p in params.items() if p.default is inspect.Parameter.empty}
    found: list[dict[str, Any]] = []
    if "input_features" in params:
        for width in _feature_widths(configs):
            for frames in (64, 100):  # 64 frames: whole steps of a subsampling by 8; 100: of a window pair of 50
                x = torch.randn(batch, frames, width, generator=generator)
                masks = {n: torch.ones(batch, frames, dtype=torch.long) for n in _FRAME_MASKS if n in required}
                found += [{"input_features": x, **masks}, {"input_features": x.mT.contiguous(), **masks}]
        mel, side = _int_fields(configs, "num_mel_bins"), _int_fields(configs, "spec_size")
        if mel and side:  # a spectrogram as a one-channel image [B, 1, frames, bins] as long as its side (CLAP)
            found.append({"input_features": torch.randn(batch, 1, side[0], mel[0], generator=generator)})
    if "input_values" in params:
        hidden = next(iter(_int_fields(configs, "hidden_size")), None)
        if "decoder_input_values" in params and hidden:  # a sequence-to-sequence of hidden states (no prenets)
            found.append(
                {
                    "input_values": torch.randn(batch, length, hidden, generator=generator),
                    "decoder_input_values": torch.randn(batch, length // 2, hidden, generator=generator),
                }
            )
        bins = _int_fields(configs, "num_mel_bins")
        if bins:  # a spectrogram [B, frames, bins], as long as the config's max_length
            frames = next(iter(_int_fields(configs, "max_length")), 100)
            found.append({"input_values": torch.randn(batch, frames, bins[0], generator=generator)})
    first = next(iter(params), None)
    wave = "input_values" if "input_values" in params else "hidden_states" if first == "hidden_states" else None
    if wave is not None and "grid_thw" not in params:
        hop = _hop(configs)
        channels = next(iter(_int_fields(configs, "channels", "audio_channels")), 1)
        samples = torch.randn(batch, channels, hop * max(2, math.ceil(WAVE / hop)), generator=generator)
        found += [{wave: samples[:, 0]}, {wave: samples}]
    latents = "latents" if "latents" in params else "hidden_states" if wave == "hidden_states" else None
    width = getattr(config, "hidden_size", None)
    if latents is not None and isinstance(width, int):  # a codec decoder's latents, channels first
        found.append({latents: torch.randn(batch, width, length, generator=generator)})
    codebooks = getattr(config, "num_codebooks", 1)
    if "input_ids" in params and isinstance(codebooks, int) and codebooks > 1:  # a text column, then the codebooks
        sizes = (getattr(config, "vocab_size", None), getattr(config, "codebook_vocab_size", None), 1000)
        top = min(v for v in sizes if isinstance(v, int))
        found.append({"input_ids": torch.randint(3, top, (batch, length, codebooks + 1), generator=generator)})
    return found


_FRAME_MASKS = ("input_features_mask", "attention_mask")


def _configs(config: Any) -> list[Any]:
    """The config and every sub-config below it, breadth first (an ASR config inside an audio model's)."""
    found: list[Any] = []
    todo = [config]
    while todo:
        c = todo.pop(0)
        if c is None or any(c is f for f in found):
            continue
        found.append(c)
        todo += [getattr(c, k, None) for k in (getattr(c, "sub_configs", None) or {})]
    return found


def _int_fields(configs: list[Any], *names: str) -> list[int]:
    """The integer values of these fields (or properties) in each config, in order."""
    return [v for c in configs for k in names if isinstance(v := getattr(c, k, None), int) and not isinstance(v, bool)]


def _feature_widths(configs: list[Any]) -> list[int]:
    """Widths a frame of `input_features` may have: one the config names (stacked frames), the mel count (80 and 128
    where none is named), and the mel count of stacked frames with deltas (2× and 4×)."""
    named = _int_fields(configs, "input_size", "feature_projection_input_dim", "input_dim", "input_feat_size")
    bins = _int_fields(configs, "num_mel_bins", "feature_size") or [80, 128]
    return list(dict.fromkeys([*named, *bins, 128, *(m * b for b in bins for m in (2, 4))]))


def _hop(configs: list[Any]) -> int:
    """Samples per output frame of a wave encoder: its hop length, or the product of its strides."""
    hops = _int_fields(configs, "hop_length")
    for c in configs:
        for key in ("downsampling_ratios", "upsampling_ratios", "patch_sizes"):
            value = getattr(c, key, None)
            if isinstance(value, (list, tuple)) and value and all(isinstance(i, int) for i in value):
                hops.append(math.prod(value))
    return max(hops, default=1)
