"""Heatmaps: tokens as HTML or coloured terminal text, images as a PNG, an HTML grid or terminal blocks.

Colour is relevance over its largest magnitude in the row or image (red positive, blue negative); every
view states that scale and shows the raw values beside the colours. Drawing sits below api/: an Explanation
or a Generation hands itself over (`show`, `explanation_html`, `show_generation`, `generation_html`).
"""

from __future__ import annotations

import html
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .engine.positional import paint

_MARKERS = ("Ġ", "▁", "Ċ")
_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
    ".lrp .tok{display:inline-block;text-align:center;white-space:pre;padding:1px 2px;margin:1px 0;line-height:1.2}"
    ".lrp .tok small{display:block;font-size:65%;opacity:.85}"
    ".lrp .bar{display:inline-block;width:12em;height:.9em;vertical-align:middle;margin:0 .4em;"
    "background:linear-gradient(to right,rgb(0,0,255),rgb(255,255,255),rgb(255,0,0))}"
    ".lrp .legend{font-size:85%;color:#444;margin:.5em 0}"
    ".lrp .grid{display:inline-grid;gap:0;margin:.3em 0}.lrp .grid div{width:6px;height:6px}"
)
_INK_FLIP = 0.55  # beyond this share of the peak, backgrounds are dark enough for white text


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


def _peak(scores: torch.Tensor) -> float:
    return scores.detach().double().abs().max().item() if scores.numel() else 0.0


def _normalised(scores: torch.Tensor) -> list[float]:
    scores = scores.detach().double().cpu().reshape(-1)
    peak = _peak(scores)
    return (scores / peak).tolist() if peak > 0 else [0.0] * len(scores)


def _rgb(value: float) -> tuple[int, int, int]:
    fade = round(255 * (1 - min(1.0, abs(value))))
    return (255, fade, fade) if value >= 0 else (fade, fade, 255)


def _ink(value: float) -> tuple[int, int, int]:
    return (255, 255, 255) if abs(value) > _INK_FLIP else (0, 0, 0)


def tokens_terminal(tokens: Sequence[str], scores: torch.Tensor) -> str:
    """Tokens on coloured backgrounds (24-bit ANSI), for a terminal; text turns white on saturated colours."""
    parts = []
    for text, value in zip(clean_tokens(tokens), _normalised(scores), strict=True):
        (r, g, b), (ir, ig, ib) = _rgb(value), _ink(value)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{ir};{ig};{ib}m{text}\x1b[0m")
    return "".join(parts)


def tokens_plain(tokens: Sequence[str], scores: torch.Tensor) -> str:
    """Tokens with their normalised relevance in brackets, for logs and pipes."""
    return "".join(
        f"{text}[{value:+.2f}]" for text, value in zip(clean_tokens(tokens), _normalised(scores), strict=True)
    )


def _legend() -> str:
    return (
        "<div class='legend'>−1<span class='bar'></span>+1 &nbsp; colour: relevance ÷ the largest |relevance| "
        "of its row (given after the row's name); small numbers: raw relevance</div>"
    )


def _row_html(label: str, tokens: Sequence[str], scores: torch.Tensor) -> str:
    spans = []
    for text, value, raw in zip(clean_tokens(tokens), _normalised(scores), scores.reshape(-1).tolist(), strict=True):
        (r, g, b), (ir, ig, ib) = _rgb(value), _ink(value)
        spans.append(
            f"<span class='tok' style='background:rgb({r},{g},{b});color:rgb({ir},{ig},{ib})'>"
            f"{html.escape(text)}<small>{raw:+.3g}</small></span>"
        )
    return f"<p><b>{html.escape(label)}</b> (±{_peak(scores):.4g})<br>{''.join(spans)}</p>"


def _grid_html(label: str, heat: torch.Tensor, cells: int = 48) -> str:
    small = _shrink(heat, cells)
    cols = small.shape[1]
    colours = "".join(f"<div style='background:rgb{_rgb(v)}'></div>" for v in _normalised(small))
    return (
        f"<p><b>{html.escape(label)}</b> (±{_peak(heat):.4g})<br><span class='grid' "
        f"style='grid-template-columns:repeat({cols},6px)'>{colours}</span></p>"
    )


def _shrink(heat: torch.Tensor, cells: int) -> torch.Tensor:
    """A 2-D map averaged down to at most `cells` per side (relevance per cell, not per pixel)."""
    heat = heat.detach().double().cpu()
    rows, cols = heat.shape
    if max(rows, cols) <= cells:
        return heat
    size = (max(1, rows * cells // max(rows, cols)), max(1, cols * cells // max(rows, cols)))
    return torch.nn.functional.adaptive_avg_pool2d(heat[None, None], size)[0, 0]


def tokens_html(
    rows: Sequence[tuple[str, Sequence[str], torch.Tensor]],
    title: str = "lrpgraph",
    notes: Sequence[str] = (),
    after: str = "",
) -> str:
    """A standalone HTML page: a colour legend, `notes` (what was explained, where the relevance went), one line of
    coloured tokens with their raw relevance per (label, tokens, scores) row, then `after` (HTML, e.g. a matrix)."""
    body = "\n".join(_row_html(label, tokens, scores) for label, tokens, scores in rows)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body class='lrp'><h2>{html.escape(title)}</h2>\n"
        + "".join(f"<p>{html.escape(note)}</p>\n" for note in notes)
        + _legend()
        + "\n"
        + body
        + after
        + "\n</body></html>\n"
    )


def where_it_went(ex: Any) -> str:
    """One line: the relevance put on the output and where it ended (inputs, positions, biases, rules …)."""
    seed = float(ex.conservation.seed.sum())
    scale = abs(seed) if seed else 1.0
    parts = " · ".join(f"{k} {v:.4g} ({100 * v / scale:.1f}%)" for k, v in ex.conservation.where_it_went().items())
    return f"relevance put on the output {seed:.4g} → {parts}"


def _views(ex: Any, tokens: Sequence[str] | None, sample: int) -> tuple[list[str], list[tuple[str, Any, Any]]]:
    """(notes, views) for one sample: each view ("tokens", label, (tokens, scores)) or ("image", label, map)."""
    seed = ex.conservation.seed
    many = seed.dim() == 2  # [K, B]: K targets; the first is shown
    if not 0 <= sample < seed.shape[-1]:
        raise IndexError(f"sample must be in 0..{seed.shape[-1] - 1}, not {sample}")
    notes = [
        f"rules {ex.rules}; sample {sample}"
        + (f"; target 1 of {seed.shape[0]}" if many else "")
        + f"; relevance put on the output {float(seed[0, sample] if many else seed[sample]):.4g}",
        where_it_went(ex) + (" (whole batch)" if seed.shape[-1] > 1 else ""),
    ]
    pick = (lambda t: t[0][sample]) if many else (lambda t: t[sample])
    views = []
    extra = {"positions (PA-LRP)": ex.positional, "combined (PA-LRP)": ex.combined}
    for label, r in [*ex.relevance.items(), *((k, v) for k, v in extra.items() if v is not None)]:
        one = pick(r)
        if one.dim() == 3:  # [C, H, W]: an image
            views.append(("image", label, one.sum(0)))
        elif one.dim() == 2 and label.startswith("combined"):  # PA-LRP's image map [H, W]
            views.append(("image", label, one))
        else:  # per token ([T], or [T, D] summed over features)
            scores = one.sum(-1) if one.dim() == 2 else one.reshape(-1)
            if tokens is not None and len(tokens) < len(scores):  # a padded row: its real tokens only
                scores = scores[: len(tokens)]
            names = list(tokens) if tokens is not None and len(tokens) == len(scores) else None
            views.append(("tokens", label, (names or [f"#{i} " for i in range(len(scores))], scores)))
    return notes, views


def explanation_html(ex: Any, tokens: Sequence[str] | None = None, sample: int = 0) -> str:
    """An HTML fragment of one sample's explanation (for notebooks)."""
    notes, views = _views(ex, tokens, sample)
    parts = [f"<style>{_STYLE}</style><div class='lrp'>", *(f"<p>{html.escape(n)}</p>" for n in notes), _legend()]
    for kind, label, data in views:
        parts.append(_row_html(label, *data) if kind == "tokens" else _grid_html(label, data))
    return "".join(parts) + "</div>"


def explanation_text(ex: Any, tokens: Sequence[str] | None = None, sample: int = 0, colour: bool = True) -> str:
    """One sample's explanation as terminal text: coloured tokens (or bracketed values) and image blocks."""
    notes, views = _views(ex, tokens, sample)
    lines = [*notes, "colour: relevance ÷ the largest |relevance| of its row (given after the name)"]
    for kind, label, data in views:
        if kind == "tokens":
            toks, scores = data
            heat = tokens_terminal(toks, scores) if colour else tokens_plain(toks, scores)
            lines.append(f"{label} (±{_peak(scores):.4g}): {heat}")
        else:
            lines.append(f"{label} (±{_peak(data):.4g}):")
            lines.extend(_blocks(data, colour))
    return "\n".join(lines)


def _blocks(heat: torch.Tensor, colour: bool) -> list[str]:
    small = _shrink(heat, 32)
    values = torch.tensor(_normalised(small)).reshape(small.shape).tolist()
    if colour:
        return ["".join("\x1b[48;2;{};{};{}m  \x1b[0m".format(*_rgb(v)) for v in row) for row in values]
    shades = " .:=+*#%@"  # two characters a cell: the sign, then the magnitude
    return ["".join(("-" if v < 0 else " ") + shades[min(8, round(abs(v) * 8))] for v in row) for row in values]


def show(ex: Any, tokens: Sequence[str] | None = None, sample: int = 0) -> None:
    """Display one sample's explanation: as HTML inside a Jupyter notebook, else as text on stdout."""
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(explanation_html(ex, tokens, sample)))
        return
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(explanation_text(ex, tokens, sample, colour))


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def generation_html(gen: Any) -> str:
    """The generation as an HTML table: a row per generated token, a column per source token, each row
    coloured by its own largest |relevance|; hover shows the raw value, the last column the explained logit."""
    sources = clean_tokens(gen.source_tokens)
    head = "".join(
        f"<th style='{'border-left:2px solid #333;' if i == gen.prompt_length else ''}writing-mode:vertical-rl'>"
        f"{html.escape(t)}</th>"
        for i, t in enumerate(sources)
    )
    rows = []
    for step, token in enumerate(clean_tokens(gen.generated_tokens)):
        scores = gen.relevance[step]
        cells = []
        for i, (value, raw) in enumerate(zip(_normalised(scores), scores.tolist(), strict=True)):
            (r, g, b), (ir, ig, ib) = _rgb(value), _ink(value)
            edge = "border-left:2px solid #333;" if i == gen.prompt_length else ""
            text = f"{raw:+.2g}" if i < gen.seen(step) else ""
            cells.append(
                f"<td style='{edge}background:rgb({r},{g},{b});color:rgb({ir},{ig},{ib})' title='{raw:.4g}'>{text}</td>"
            )
        rows.append(f"<tr><th>{html.escape(token)}</th>{''.join(cells)}<td>{float(gen.logits[step]):.4g}</td></tr>")
    return (
        f"<style>{_STYLE}.lrp table{{border-collapse:collapse;font-size:80%}}.lrp td{{padding:2px 4px}}</style>"
        f"<div class='lrp'><p>rules {html.escape(gen.rules)}; generated: {html.escape(''.join(gen.generated_tokens))}"
        "</p><div class='legend'>−1<span class='bar'></span>+1 &nbsp; a row per generated token, a column per "
        "source (prompt | generated); colour: relevance ÷ the row's largest |relevance|; numbers: raw relevance; "
        "last column: the explained logit</div>"
        f"<table><tr><th></th>{head}<th>logit</th></tr>{''.join(rows)}</table></div>"
    )


def generation_text(gen: Any, colour: bool = True) -> str:
    """One line per generated token: the sources it could see, coloured (or the top three with values)."""
    scale = "relevance of each source ÷ the line's largest |relevance|" if colour else "the top three sources (raw)"
    lines = [f"rules {gen.rules}; a line per generated token: {scale}"]
    for step, token in enumerate(gen.generated_tokens):
        n = gen.seen(step)
        scores = gen.relevance[step, :n]
        if colour:
            shown = tokens_terminal(gen.source_tokens[:n], scores)
        else:
            top = sorted(
                zip(clean_tokens(gen.source_tokens[:n]), scores.tolist(), strict=True), key=lambda t: -abs(t[1])
            )
            shown = ", ".join(f"{t.strip()} {v:+.3g}" for t, v in top[:3])
        lines.append(f"{token!r} (logit {float(gen.logits[step]):.4g}) ← {shown}")
    return "\n".join(lines)


def show_generation(gen: Any) -> None:
    """Display a Generation: an HTML table in a notebook, lines of text on stdout otherwise."""
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(generation_html(gen)))
        return
    print(generation_text(gen, sys.stdout.isatty() and "NO_COLOR" not in os.environ))


def patches_to_pixels(per_patch: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Per-patch relevance [B, N] (row-major) spread evenly over its pixels [B, H, W]: each of a patch's p²
    pixels gets 1/p² of it, so sums are kept (PA-LRP's vision map)."""
    return paint(per_patch, image_size, image_size, patch_size) / patch_size**2


def image_heatmap(image: torch.Tensor, relevance: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Save the input image [C, H, W] and its relevance (summed over channels) side by side as a PNG, with a
    colour bar in relevance units (symmetric around 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = image.detach().float().cpu()
    heat = relevance.detach().float().cpu()
    heat = heat.sum(0) if heat.dim() == 3 else heat
    shown = image.permute(1, 2, 0) if image.dim() == 3 and image.shape[0] in (1, 3) else image
    shown = (shown - shown.min()) / (shown.max() - shown.min()).clamp_min(1e-12)
    peak = heat.abs().max().clamp_min(1e-12).item()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    shown = shown.squeeze(-1) if shown.dim() == 3 and shown.shape[-1] == 1 else shown
    axes[0].imshow(shown.numpy(), cmap="gray")
    axes[0].set_title("input")
    drawn = axes[1].imshow(heat.numpy(), cmap="bwr", vmin=-peak, vmax=peak)
    axes[1].set_title(f"relevance (total {heat.sum().item():.4g})")
    fig.colorbar(drawn, ax=axes[1], label="relevance per pixel (summed over channels)")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return path


def _pair_labels(sim: Any, pair: int) -> tuple[list[int], list[int], list[str], list[str]]:
    """The real positions of a similarity pair and their labels (tokens if known, else positions)."""
    rows, cols = sim.positions(pair)

    def labels(tokens: Any, where: list[int]) -> list[str]:
        if tokens is None:
            return [str(i) for i in where]
        return [t.strip() or "␣" for t in (clean_tokens(tokens[pair])[i] for i in where)]

    return rows, cols, labels(sim.tokens_a, rows), labels(sim.tokens_b, cols)


def similarity_pairs_text(sim: Any, pair: int = 0, k: int = 5) -> str:
    """The strongest token pairs of one similarity, a line per sign, for a terminal or a log."""
    names_a = _names(sim.tokens_a, pair, sim.interactions.shape[1])
    names_b = _names(sim.tokens_b, pair, sim.interactions.shape[2])
    top = sim.top_pairs(pair, k)
    total = float(sim.interactions[pair].double().sum())
    lines = [
        f"token pairs (BiLRP): the cells sum to {total:.4g} of the {sim.kind} similarity "
        f"{float(sim.similarity[pair]):.4g}; strongest first"
    ]
    for sign, chosen in (("+", [t for t in top if t[2] > 0]), ("−", [t for t in top if t[2] < 0])):
        shown = ", ".join(f"{names_a[i]} ↔ {names_b[j]} {value:+.4g}" for i, j, value in chosen)
        lines.append(f"  {sign} {shown or '(none)'}")
    return "\n".join(lines)


def _names(tokens: Any, pair: int, length: int) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(length)]
    return [t.strip() or "␣" for t in clean_tokens(tokens[pair])]


def similarity_html(sim: Any, pair: int = 0) -> str:
    """The Ta×Tb interaction matrix of one pair as an HTML table, a's tokens down the side and b's along the top,
    each cell coloured by its share of the largest |interaction|; the first-order rows beside each axis."""
    rows, cols, labels_a, labels_b = _pair_labels(sim, pair)
    block = sim.interactions[pair][rows][:, cols].detach().double().cpu()
    colours = torch.tensor(_normalised(block)).reshape(block.shape)
    first_a = _normalised(sim.relevance_a[pair][rows])
    first_b = _normalised(sim.relevance_b[pair][cols])
    head = "".join(
        f"<th style='writing-mode:vertical-rl;background:rgb{_rgb(v)}'>{html.escape(t)}</th>"
        for t, v in zip(labels_b, first_b, strict=True)
    )
    body = []
    for r, (label, v) in enumerate(zip(labels_a, first_a, strict=True)):
        cells = "".join(
            f"<td style='background:rgb{_rgb(c)};color:rgb{_ink(c)}' title='{raw:.4g}'>{raw:+.2g}</td>"
            for c, raw in zip(colours[r].tolist(), block[r].tolist(), strict=True)
        )
        body.append(f"<tr><th style='text-align:right;background:rgb{_rgb(v)}'>{html.escape(label)}</th>{cells}</tr>")
    total = float(block.sum())
    return (
        f"<style>{_STYLE}.lrp table{{border-collapse:collapse;font-size:75%}}.lrp td{{padding:2px 3px}}</style>"
        f"<div class='lrp'><p>{sim.kind} similarity {float(sim.similarity[pair]):.4g}, explained pair by pair "
        f"(BiLRP, rules {html.escape(sim.rules)}): the cells sum to {total:.4g}</p>"
        "<div class='legend'>−1<span class='bar'></span>+1 &nbsp; cell: the relevance a token of the first input "
        "(rows) and a token of the second (columns) hold together, ÷ the largest |cell|; numbers: raw values; "
        "axis colours: each input's first-order relevance</div>"
        f"<table><tr><th></th>{head}</tr>{''.join(body)}</table></div>"
    )


def similarity_page(sim: Any, title: str = "lrpgraph") -> str:
    """A standalone HTML page with the matrix of every pair."""
    pairs = "\n".join(similarity_html(sim, p) for p in range(sim.interactions.shape[0]))
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h2>{html.escape(title)}</h2>\n{pairs}\n</body></html>\n"
    )


def show_similarity(sim: Any, pair: int = 0) -> None:
    """Display one pair's interactions: the matrix in a notebook, the strongest pairs on stdout otherwise."""
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(similarity_html(sim, pair)))
        return
    print(similarity_pairs_text(sim, pair))
