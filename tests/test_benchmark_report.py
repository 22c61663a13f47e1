"""The speed and memory figures of README.md and benchmarks/RESULTS.md are exactly what benchmarks/report.py makes
from the committed JSON in benchmarks/results/: a figure typed or edited by hand fails here. Nothing is timed."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("benchmark_report", ROOT / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

# a speed or memory figure: a number followed by ×, ms, MiB or s ("2×2 patches" is not one)
FIGURE = re.compile(r"\d(?:\.\d+)?\s?(?:×(?!\d)|ms\b|MiB\b|s\b)")


@pytest.fixture(scope="module")
def results():
    return report.load()


def test_every_benchmark_has_its_committed_json():
    for name in report.BENCHMARKS:
        path = report.RESULTS / f"{name}.json"
        assert path.exists(), f"{path} is missing: run benchmarks/bench_{name}.py"


def test_results_md_speed_section_is_generated(results):
    text = report.RESULTS_MD.read_text()
    assert report.SECTION in text
    assert report.results_md(results, text) == text, "RESULTS.md differs from `python benchmarks/report.py`"
    section = text[text.index(report.SECTION) :]
    assert {m["name"] for m in report.MARKED.finditer(section)} == set(report.RESULTS_BLOCKS)


def test_readme_figures_are_generated(results):
    text = report.README.read_text()
    assert {m["name"] for m in report.MARKED.finditer(text)} == set(report.README_BLOCKS)
    assert report.readme(results, text) == text, "README.md differs from `python benchmarks/report.py`"


def test_readme_has_no_figure_outside_the_generated_blocks():
    text = report.MARKED.sub("", report.README.read_text())
    assert FIGURE.findall(text) == []


def test_a_hand_edit_is_caught(results):
    """One digit changed inside a generated block: the file no longer equals what the generator makes of it."""
    text = report.README.read_text()
    block = next(report.MARKED.finditer(text))
    body = text.index("\n", block.start()) + 1
    at = body + re.search(r"\d", text[body : block.end()]).start()
    edited = text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :]
    assert report.readme(results, edited) != edited
