"""Image inputs for tiny models whose first guesses (a square image of the config's size, patches of a 2×2 grid) do
not fit: vision towers of flattened patches with their grid in each layout towers take, patches with their (x, y)
positions, one packed image with its patch grid, images of the config's (height, width), an image large enough for
a recogniser's strides, and image pairs.

Every layout is read from the config; `tiny.candidate_inputs` tries these after its own, so a model that runs on an
earlier guess keeps it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

LARGE = 96  # a side every recogniser's strides leave at least a few positions of


def vision_candidates(params: Mapping[str, inspect.Parameter], config: Any, vision: Any, batch: int) -> list[dict]:
    """Inputs to try after the first guesses, for a forward with these parameters (`vision`: the image sub-config,
    or the config itself)."""
    generator = torch.Generator().manual_seed(2)
    channels = _first(vision, ("num_channels", "in_channels"), 3)
    patch = _one(_first(vision, ("patch_size",), 14))
    found: list[dict[str, Any]] = []
    grid = next((name for name in ("grid_thw", "image_grid_thw") if name in params), None)
    if grid:  # a grid of patches, flattened or as small images, or one row per merged token (channels last)
        merge = _one(_first(vision, ("spatial_merge_size", "merge_size", "merge_kernel_size"), 2))
        frames = _first(vision, ("temporal_patch_size", "patch_temporal"), 1)
        side = 2 * merge
        extra = {"merge_sizes": torch.tensor([merge])} if "merge_sizes" in params else {}
        thw = torch.tensor([[1, side, side]])
        flat = torch.randn(side * side, channels * frames * patch * patch, generator=generator)
        found += [
            {"pixel_values": flat, grid: thw, **extra},
            {"pixel_values": torch.randn(side * side, channels, patch, patch, generator=generator), grid: thw, **extra},
            {
                "pixel_values": torch.randn(4, patch * merge, patch * merge, channels, generator=generator),
                grid: torch.tensor([[1, 2, 2]]),
                **extra,
            },
        ]
    if "pixel_position_ids" in params:  # flattened patches with their (x, y), a grid of whole pooling windows
        side = 2 * _first(vision, ("pooling_kernel_size",), 1)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        where = torch.stack([xs.flatten(), ys.flatten()], -1)
        found.append(
            {
                "pixel_values": torch.rand(batch, side * side, channels * patch * patch, generator=generator),
                "pixel_position_ids": where.expand(batch, -1, -1).contiguous(),
            }
        )
    if "target_sizes" in params and "pixel_values" in params:  # one packed image and its grid of whole windows
        side = 2 * _one(_first(vision, ("window_kernel_size",), 1))
        found.append(
            {
                "pixel_values": torch.randn(1, channels, side * patch, side * patch, generator=generator),
                "target_sizes": torch.tensor([[side, side]]),
            }
        )
    if "pixel_values" in params and not grid:
        height, width = image_shape(vision)
        for h, w in dict.fromkeys([(height, width), (max(height, LARGE), max(width, LARGE))]):
            found.append({"pixel_values": torch.randn(batch, channels, h, w, generator=generator)})
        found.append({"pixel_values": torch.rand(batch, 2, channels, height, width, generator=generator)})  # pairs
        backbone = getattr(config, "backbone_config", None) or vision
        windows = _first(backbone, ("num_windows_side", "num_windows"), 0)
        if windows:  # a windowed backbone: two patches a side in each of its windows a side (LW-DETR, RF-DETR)
            side = 2 * windows * _one(_first(backbone, ("patch_size",), patch))
            found.append({"pixel_values": torch.randn(batch, channels, side, side, generator=generator)})
    return found


def image_shape(config: Any) -> tuple[int, int]:
    """(height, width) from the config's image size (a pair kept as a pair: a text recogniser's 32 × 128)."""
    size = _first(config, ("image_size", "crop_size", "max_img_size"), 32)
    return (int(size[0]), int(size[-1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


def _first(config: Any, names: tuple[str, ...], default: Any) -> Any:
    """The first of these fields the config sets, else `default`."""
    return next((v for name in names if (v := getattr(config, name, None))), default)


def _one(value: Any) -> int:
    """A size given as one number or as a (height, width) pair: its first."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)
