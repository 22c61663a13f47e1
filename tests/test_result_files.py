"""Files lrpgraph reads back: a damaged result part is set aside (never deleted) and its inputs redone, reading
results names it and reads the rest; a trace cache path that is a file is a one-line error naming its variable."""

import warnings

import pytest
import torch

import lrpgraph
from lrpgraph.distributed import read_results
from lrpgraph.distributed.results import write_part, written


def _rows(indices, error=None):
    return [{"index": i, "error": error, "relevance.x": [float(i), 1.0], "shape.x": [2]} for i in indices]


@pytest.fixture
def parts(tmp_path):
    """Three parts: inputs 0–2, 3–5 and 6–7."""
    return tmp_path, [write_part(tmp_path, _rows(chunk)) for chunk in ([0, 1, 2], [3, 4, 5], [6, 7])]


def test_a_truncated_part_is_set_aside_and_its_inputs_redone(parts):
    folder, (first, second, third) = parts
    data = second.read_bytes()
    second.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.warns(UserWarning, match=r"part-000000003-.*cannot be read.*moved to .*damaged.*explained again"):
        done, moved = written(folder)
    assert done == {0, 1, 2, 6, 7}
    assert moved == [folder / "damaged" / second.name] and moved[0].read_bytes() == data[: len(data) // 2]
    assert not second.exists() and first.exists() and third.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged is left to warn about
        assert written(folder) == ({0, 1, 2, 6, 7}, [])


def test_a_part_whose_rows_do_not_match_its_name_is_set_aside(parts):
    folder, (first, second, _) = parts
    second.write_bytes(first.read_bytes())  # another part's rows under this name
    with pytest.warns(UserWarning, match="rows that do not match its name"):
        done, moved = written(folder)
    assert done == {0, 1, 2, 6, 7} and [m.name for m in moved] == [second.name]


def test_a_second_damaged_copy_keeps_the_first(parts):
    folder, (_, second, _) = parts
    good = second.read_bytes()
    for cut in (10, 20):  # damaged, set aside, rewritten by a rerun, damaged again
        second.write_bytes(good[:cut])
        with pytest.warns(UserWarning):
            written(folder)
    kept = {p.name: len(p.read_bytes()) for p in (folder / "damaged").iterdir()}
    assert kept == {second.name: 10, f"{second.stem}.1.parquet": 20}


def test_read_results_names_a_damaged_part_and_reads_the_rest(parts):
    folder, (_, second, _) = parts
    second.write_bytes(b"PAR1 not really")
    with pytest.warns(UserWarning, match=rf"{second.name} cannot be read.*rows are not read"):
        rows = read_results(folder)
    assert [r["index"] for r in rows] == [0, 1, 2, 6, 7]
    assert rows[3]["relevance"]["x"].tolist() == [6.0, 1.0]
    assert second.exists()  # reading moves nothing


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_cache_directory_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch, how):
    path = tmp_path / "cache"
    path.write_text("not a folder")
    model, x = torch.nn.Linear(3, 2), torch.randn(1, 3)
    if how == "environment":
        monkeypatch.setenv("LRPGRAPH_CACHE_DIR", str(path))
        options, named = {}, r"\$LRPGRAPH_CACHE_DIR"
    else:
        options, named = {"cache_dir": path}, "cache_dir"
    with pytest.raises(lrpgraph.InputError, match=rf"^{named} must be a directory .*{path} is a file$"):
        lrpgraph.explain(model, x, target=0, **options)
    assert path.read_text() == "not a folder"
