"""Heatmaps: tokens as HTML or coloured terminal text, images as a PNG beside the input.

Relevance is normalised by its largest magnitude; positive relevance is red, negative blue.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import torch

from ..api.positional import paint

_MARKERS = ("Ġ", "▁", "Ċ")


def clean_tokens(tokens: Sequence[str]) -> list[str]:
    """Readable token strings: BPE and SentencePiece space markers become spaces, WordPiece '##' joins."""
    out = []
    for token in tokens:
        text = token
        for marker in _MARKERS:
            text = text.replace(marker, " ")
        if text.startswith("##"):
            text = text[2:]
        elif out and not text.startswith(" "):
            text = " " + text
        out.append(text)
    return out


def _normalised(scores: torch.Tensor) -> list[float]:
    scores = scores.detach().double().cpu()
    peak = scores.abs().max().item()
    return (scores / peak).tolist() if peak > 0 else [0.0] * len(scores)


def _rgb(value: float) -> tuple[int, int, int]:
    fade = round(255 * (1 - min(1.0, abs(value))))
    return (255, fade, fade) if value >= 0 else (fade, fade, 255)


def tokens_terminal(tokens: Sequence[str], scores: torch.Tensor) -> str:
    """Tokens on coloured backgrounds (24-bit ANSI), for a terminal."""
    parts = []
    for text, value in zip(clean_tokens(tokens), _normalised(scores), strict=True):
        r, g, b = _rgb(value)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m")
    return "".join(parts)


def tokens_plain(tokens: Sequence[str], scores: torch.Tensor) -> str:
    """Tokens with their normalised relevance in brackets, for logs and pipes."""
    return "".join(
        f"{text}[{value:+.2f}]" for text, value in zip(clean_tokens(tokens), _normalised(scores), strict=True)
    )


def tokens_html(rows: Sequence[tuple[str, Sequence[str], torch.Tensor]], title: str = "lrpgraph") -> str:
    """A standalone HTML page: one line of coloured tokens per (label, tokens, scores) row."""
    body = []
    for label, tokens, scores in rows:
        spans = []
        for text, value, raw in zip(clean_tokens(tokens), _normalised(scores), scores.tolist(), strict=True):
            r, g, b = _rgb(value)
            spans.append(f'<span style="background: rgb({r},{g},{b})" title="{raw:.4g}">{html.escape(text)}</span>')
        body.append(f"<p><b>{html.escape(label)}</b><br>{''.join(spans)}</p>")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}span{white-space:pre;padding:1px 0}"
        f"</style></head><body><h2>{html.escape(title)}</h2>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def patches_to_pixels(per_patch: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Per-patch relevance [B, N] (row-major) spread evenly over its pixels [B, H, W]: each of a patch's p²
    pixels gets 1/p² of it, so sums are kept (PA-LRP's vision map)."""
    return paint(per_patch, image_size, image_size, patch_size) / patch_size**2


def image_heatmap(image: torch.Tensor, relevance: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Save the input image [C, H, W] and its relevance (summed over channels) side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = image.detach().float().cpu()
    heat = relevance.detach().float().cpu()
    heat = heat.sum(0) if heat.dim() == 3 else heat
    shown = image.permute(1, 2, 0) if image.dim() == 3 and image.shape[0] in (1, 3) else image
    shown = (shown - shown.min()) / (shown.max() - shown.min()).clamp_min(1e-12)
    peak = heat.abs().max().clamp_min(1e-12).item()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].imshow(shown.squeeze(-1) if shown.dim() == 3 and shown.shape[-1] == 1 else shown, cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(heat, cmap="bwr", vmin=-peak, vmax=peak)
    axes[1].set_title("relevance")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return path
