"""Heatmaps: tokens as terminal text and HTML, images as a PNG, an HTML grid or terminal blocks; `show`."""

import pytest
import torch

import lrpgraph
from lrpgraph.viz import (
    clean_tokens,
    explanation_html,
    explanation_text,
    image_heatmap,
    tokens_html,
    tokens_plain,
    tokens_terminal,
    where_it_went,
)


def test_token_cleaning():
    assert clean_tokens(["[CLS]", "play", "##ing", "Ġgood", "▁day"]) == ["[CLS]", " play", "ing", " good", " day"]


def test_terminal_and_plain_heatmaps():
    scores = torch.tensor([0.5, -1.0, 0.0])
    coloured = tokens_terminal(["a", "b", "c"], scores)
    assert coloured.count("\x1b[48;2;") == 3
    assert "\x1b[48;2;0;0;255m\x1b[38;2;255;255;255m" in coloured  # most negative: full blue, white text
    assert "\x1b[48;2;255;255;255m\x1b[38;2;0;0;0m" in coloured  # zero: white, black text
    assert tokens_plain(["a", "b", "c"], scores) == "a[+0.50] b[-1.00] c[+0.00]"


def test_html_heatmap_has_legend_scale_and_raw_scores():
    page = tokens_html([("sentence", ["x", "<y>"], torch.tensor([2.0, 0.5]))], title="t", notes=["similarity 0.7"])
    assert "&lt;y&gt;" in page and page.count("class='tok'") == 2
    assert "background:rgb(255,0,0);color:rgb(255,255,255)" in page  # the peak: saturated red, white text
    assert "background:rgb(255,191,191);color:rgb(0,0,0)" in page  # a quarter of it: light, black text
    assert "<small>+2</small>" in page and "<small>+0.5</small>" in page  # raw values beside the colours
    assert "(±2)" in page and "class='bar'" in page and "<p>similarity 0.7</p>" in page


def test_image_heatmap_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = image_heatmap(torch.rand(3, 16, 16), torch.randn(3, 16, 16), tmp_path / "heat.png", title="demo")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _cnn_explanation() -> lrpgraph.Explanation:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 64, 3)
    ).eval()
    return lrpgraph.explain(model, torch.rand(2, 3, 8, 8), target=1, rules="epsilon")


def test_where_it_went_splits_the_seed():
    ex = _cnn_explanation()
    parts = ex.conservation.where_it_went()
    assert set(parts) == {"input", "bias"}
    assert sum(parts.values()) == pytest.approx(float(ex.conservation.seed.sum()), rel=1e-5)
    line = where_it_went(ex)
    assert line.startswith(f"relevance put on the output {float(ex.conservation.seed.sum()):.4g} → input ")


def test_explanation_views_images_and_tokens():
    ex = _cnn_explanation()
    text = explanation_text(ex, sample=1, colour=False)
    lines = text.splitlines()
    assert lines[0] == f"rules epsilon; sample 1; relevance put on the output {float(ex.conservation.seed[1]):.4g}"
    blocks = lines[4:]
    assert len(blocks) == 8 and all(len(row) == 16 for row in blocks)  # 8×8 cells, two characters each
    heat = ex.relevance["input"][1].sum(0)
    row, col = divmod(int(heat.abs().argmax()), 8)
    assert blocks[row][2 * col + 1] == "@"  # the largest |relevance| is the darkest cell
    page = explanation_html(ex)
    assert page.count("<div style='background:rgb") == 64 and ex._repr_html_() == page
    with pytest.raises(IndexError, match=r"sample must be in 0\.\.1"):
        explanation_text(ex, sample=2)


def test_show_prints_tokens_by_name(capsys):
    ex = lrpgraph.explain(torch.nn.Sequential(torch.nn.Linear(3, 2)).eval(), torch.tensor([[1.0, -2.0, 0.5]]))
    ex.show(tokens=["a", "b", "c"])
    out = capsys.readouterr().out
    assert "input (±" in out and "a[" in out and " b[" in out and " c[" in out
