"""Heatmaps: tokens as terminal text and HTML, images as a PNG beside the input."""

import pytest
import torch

from lrpgraph.tools.viz import clean_tokens, image_heatmap, tokens_html, tokens_plain, tokens_terminal


def test_token_cleaning():
    assert clean_tokens(["[CLS]", "play", "##ing", "Ġgood", "▁day"]) == ["[CLS]", " play", "ing", " good", " day"]


def test_terminal_and_plain_heatmaps():
    scores = torch.tensor([0.5, -1.0, 0.0])
    coloured = tokens_terminal(["a", "b", "c"], scores)
    assert coloured.count("\x1b[48;2;") == 3
    assert "\x1b[48;2;0;0;255m" in coloured  # the most negative token is full blue
    assert tokens_plain(["a", "b", "c"], scores) == "a[+0.50] b[-1.00] c[+0.00]"


def test_html_heatmap():
    page = tokens_html([("sentence", ["x", "<y>"], torch.tensor([1.0, 0.25]))], title="t")
    assert "&lt;y&gt;" in page and "rgb(255,0,0)" in page and page.count("<span") == 2


def test_image_heatmap_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = image_heatmap(torch.rand(3, 16, 16), torch.randn(3, 16, 16), tmp_path / "heat.png", title="demo")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
