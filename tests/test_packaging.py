"""The built wheel holds every subpackage and every preset: imported from the wheel, not from the source tree."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lrpgraph.tools.zoo import architectures

ROOT = Path(__file__).resolve().parent.parent

CHECK = Path(__file__).resolve().parent / "wheel_check.py"  # CI runs it too, in a fresh venv


def _source_modules() -> list[str]:
    found = []
    for path in (ROOT / "lrpgraph").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "lrpgraph" and name != "lrpgraph.__main__":
            found.append(name)
    return sorted([*found, "lrpgraph.presets.tables"])


def test_the_wheel_holds_every_subpackage_and_preset(tmp_path):
    pytest.importorskip("setuptools")  # built without isolation: no index needed
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("lrpgraph-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, str(CHECK)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(site))  # the wheel's copy, not the source tree
    assert found["modules"] == _source_modules()
    assert found["presets"] == sorted(p.stem for p in (ROOT / "rules").glob("*.toml"))
    assert found["zoo"] == len(architectures())  # the zoo's table ships where `lrpgraph coverage` reads it
