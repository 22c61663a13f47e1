"""Timing, peak memory and the JSON record shared by the benchmarks: ratios are always taken within one run.

Time is wall time, the median of `--repeats` calls after a warm-up call, the methods compared taking turns
(bench_llama.timed), in the benchmark's own process (the C allocator as a user has it). Peak memory is
measured in a second process (`in_new_process(memory=True)`) started with `MALLOC_MMAP_THRESHOLD_=65536`, so
that glibc returns every block of 64 KiB or more to the system when it is freed: the resident set then rises
and falls with what is live, and the high-water mark of one call, less the resident set before it, is that
call's peak — everything it held at once (tensors, the graph, Python objects). Without that setting freed
blocks stay in the heap and are reused, and a call's peak hides in memory an earlier call already touched.
Smaller blocks still come from the heap: before the measured call the heap's free pages are handed back too
(glibc's malloc_trim), or a call made of many small tensors (an unrolled scan's steps, 16 KiB each) reuses the
heap its warm-up grew and reads as 0. On CUDA the peak is torch.cuda.max_memory_allocated.

Every benchmark writes its measurements to a JSON file (default `benchmarks/results/<name>.json`) with the
command that made it and the machine it ran on; `benchmarks/report.py` turns those files into the tables of
RESULTS.md and the figures the README quotes.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

import lrpgraph

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MMAP_THRESHOLD = "65536"  # bytes: glibc serves (and returns on free) blocks this large with mmap


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call (on CUDA, with the device synchronised on both sides)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory(fn: Callable[[], object], device: torch.device, warmup: int = 1) -> int:
    """Bytes one call held at its peak beyond what was held before it (see the module docstring), after
    `warmup` unmeasured calls (which make what a first call caches: traces, kernels' buffers).

    On CPU this must run in a process started by `in_new_process(memory=True)`: the reading is only right when freed
    large blocks go back to the system."""
    for _ in range(warmup):
        fn()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize()
        del result
        return torch.cuda.max_memory_allocated(device) - base
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        raise RuntimeError("CPU peak memory is measured in a process started by measure.in_new_process(memory=True)")
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages back to the system: small blocks count too
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from the current RSS
    result = fn()
    del result
    return (_status_kib("VmHWM") - base) * 1024


def in_new_process(function: Callable[..., object], memory: bool = False, **kwargs: object) -> object:
    """`function(**kwargs)` run in a new Python process; its JSON result. With `memory`, the process is started
    with `MALLOC_MMAP_THRESHOLD_` set, as `peak_memory` needs on CPU.

    `function` is a module-level function of a benchmark script (importable from this folder); it builds what
    it measures itself (seeded as the parent does) and returns plain data."""
    module = Path(sys.modules[function.__module__].__file__).stem
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from {module} import {function.__name__} as f; "
        "print(json.dumps(f(**json.loads(sys.argv[1]))))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD} if memory else None
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{module}.{function.__name__} failed in its own process:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def machine(device: torch.device) -> dict:
    """Where and with what a benchmark ran; the load average says how busy the machine was meanwhile."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lrpgraph": lrpgraph.__version__,
        "commit": _commit(),
        "load_average_start": list(os.getloadavg()),
    }


def json_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """`--json PATH`: where the benchmark writes its measurements (default benchmarks/results/<name>.json)."""
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / f"{name}.json",
        help=f"where to write the measurements (default: benchmarks/results/{name}.json, which report.py reads)",
    )


class Record:
    """A benchmark's JSON file: the command that ran, its settings, the machine, and the measurements only
    (seconds and bytes; ratios are computed by report.py from these)."""

    def __init__(self, name: str, device: torch.device, settings: dict):
        script = Path(sys.argv[0]).resolve()
        where = script.relative_to(HERE.parent) if script.is_relative_to(HERE.parent) else script
        self.data = {
            "benchmark": name,
            "command": shlex.join(["python", str(where), *sys.argv[1:]]),
            "settings": settings,
            "machine": machine(device),
        }

    def write(self, path: Path, results: dict) -> None:
        self.data["machine"]["load_average_end"] = list(os.getloadavg())
        self.data["results"] = results
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=1, ensure_ascii=False) + "\n")
        print(f"measurements written to {path}", file=sys.stderr)
