"""Explaining a data set on a local Ray cluster: equal to `explain_many`, resumable, an actor killed on purpose."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lrpgraph
from lrpgraph.distributed import explain_dataset, read_results

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


class Classifier(nn.Module):
    """Embedding, a masked attention-free mixer and a head: padding changes nothing a real token sees."""

    def __init__(self, die_once: str | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.mix, self.head = nn.Embedding(50, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.die_once = die_once  # a marker file: the first process to trace this model dies mid-batch

    def forward(self, input_ids, attention_mask):
        if self.die_once and not os.path.exists(self.die_once):
            Path(self.die_once).touch()
            os._exit(1)  # the actor process dies while explaining its first batch
        h = torch.tanh(self.mix(self.embed(input_ids))) * attention_mask[..., None]
        return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True))


INPUTS = [{"input_ids": torch.randint(1, 50, (n,), generator=torch.Generator().manual_seed(n))} for n in
          (3, 9, 4, 7, 5, 12, 6, 2, 8, 10, 11)]  # fmt: skip


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors rebuild this module's models
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _local(**options):
    return lrpgraph.explain_many(Classifier(), INPUTS, rules="epsilon", batch_size=4, **options)


def test_rows_equal_explain_many_and_a_rerun_writes_nothing_twice(local_ray, tmp_path):
    run = explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=2)
    assert (run.explained, run.skipped, run.failed) == (len(INPUTS), 0, {})
    rows = read_results(tmp_path / "out")
    assert [r["index"] for r in rows] == list(range(len(INPUTS)))
    for r, ex, x in zip(rows, _local(), INPUTS, strict=True):
        torch.testing.assert_close(r["relevance"]["input_ids"], ex.relevance["input_ids"], rtol=1e-6, atol=1e-7)
        assert r["tokens"] == x["input_ids"].tolist()
        assert r["target"] == int(ex.output.argmax())
        assert r["seed"] == pytest.approx(float(ex.seed.sum()), rel=1e-6)
        assert r["input_total"] == pytest.approx(float(ex.conservation.input_total.sum()), rel=1e-5, abs=1e-7)
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    again = explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4)
    assert (again.explained, again.skipped) == (0, len(INPUTS))
    assert sorted((tmp_path / "out").glob("part-*.parquet")) == parts


def test_a_damaged_part_is_set_aside_and_explained_again(local_ray, tmp_path):
    """A part truncated after it was written: the rerun moves it to damaged/, explains its inputs and only them."""
    explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=1)
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    before = read_results(tmp_path / "out")
    parts[1].write_bytes(parts[1].read_bytes()[:100])
    with pytest.warns(UserWarning, match="cannot be read"):
        lost = {r["index"] for r in before} - {r["index"] for r in read_results(tmp_path / "out")}
    with pytest.warns(UserWarning, match="moved to .*damaged"):
        run = explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=1)
    assert lost and (run.explained, run.skipped) == (len(lost), len(INPUTS) - len(lost))
    assert run.damaged == [tmp_path / "out" / "damaged" / parts[1].name] and run.damaged[0].stat().st_size == 100
    after = read_results(tmp_path / "out")
    assert [r["index"] for r in after] == list(range(len(INPUTS)))
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a["relevance"]["input_ids"], b["relevance"]["input_ids"], rtol=0, atol=0)


def test_a_lost_part_is_explained_again_and_only_it(local_ray, tmp_path):
    explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=1)
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    lost = {r["index"] for r in read_results(tmp_path / "out")}
    parts[0].unlink()
    lost -= {r["index"] for r in read_results(tmp_path / "out")}
    run = explain_dataset(Classifier, INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=1)
    assert (run.explained, run.skipped) == (len(lost), len(INPUTS) - len(lost))
    assert [r["index"] for r in read_results(tmp_path / "out")] == list(range(len(INPUTS)))


def test_an_actor_killed_mid_batch_loses_nothing(local_ray, tmp_path):
    marker = tmp_path / "died"
    run = explain_dataset(
        lambda: Classifier(die_once=str(marker)), INPUTS, tmp_path / "out", rules="epsilon", batch_size=4, workers=1
    )
    assert marker.exists()  # an actor did die
    assert (run.explained, run.failed) == (len(INPUTS), {})
    rows = read_results(tmp_path / "out")
    assert [r["index"] for r in rows] == list(range(len(INPUTS)))
    for r, ex in zip(rows, _local(), strict=True):
        torch.testing.assert_close(r["relevance"]["input_ids"], ex.relevance["input_ids"], rtol=1e-6, atol=1e-7)


def test_bad_inputs_are_rows_with_their_error_and_bad_arguments_errors(local_ray, tmp_path):
    inputs = [*INPUTS[:3], {"input_ids": torch.tensor([1, 99])}]  # id 99 is outside the embedding
    run = explain_dataset(Classifier, inputs, tmp_path / "out", batch_size=2, workers=1)
    assert run.explained == 3 and list(run.failed) == [3]
    assert "input 3" not in run.failed[3] and run.failed[3]
    with pytest.raises(lrpgraph.InputError, match="workers"):
        explain_dataset(Classifier, inputs, tmp_path / "other", workers=0)
    with pytest.raises(lrpgraph.InputError, match="model"):
        explain_dataset("bert", inputs, tmp_path / "other")


def test_without_ray_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(lrpgraph.InputError, match=r"pip install 'lrpgraph\[ray\]'"):
        explain_dataset(Classifier, INPUTS, tmp_path / "out")


def test_reference_examples_on_ray_equal_the_local_ones(local_ray, tmp_path):
    """RelMax/ActMax with the walks on Ray (latent relevance in the rows): the same scores, references and heatmaps
    as `reference_examples` in this process."""
    from lrpgraph.distributed import reference_dataset

    local = lrpgraph.reference_examples(Classifier(), INPUTS, "mix", target=1, units=[0, 5], top=3, batch_size=4)
    remote = reference_dataset(Classifier, INPUTS, "mix", tmp_path / "refs", 1, units=[0, 5], top=3, batch_size=4,
                               workers=2)  # fmt: skip
    torch.testing.assert_close(remote.relevance, local.relevance, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(remote.activation, local.activation)
    assert (remote.relmax, remote.actmax) == (local.relmax, local.actmax)
    for u, maps in local.heatmaps.items():
        for i, heat in maps.items():
            torch.testing.assert_close(remote.heatmaps[u][i], heat)
    assert read_results(tmp_path / "refs" / "explained")[0]["latent"]["mix"].shape[-1] == 8
