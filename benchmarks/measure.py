"""Timing and peak-memory helpers shared by the benchmarks: ratios are always taken within one run.

Peak memory is what a call allocates beyond what was allocated before it, at its highest point:
on CUDA from torch.cuda.max_memory_allocated, on CPU from the allocation records of the PyTorch
profiler (every tensor allocation and free, summed in time order) — exact, unlike resident-set
readings, which the C allocator's caching blurs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile


@dataclass
class Measurement:
    seconds: float
    peak_bytes: int


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's native layer prints start/stop lines; keep them out of the tables."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes the call needed at its peak beyond what was allocated before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize()
        del result
        return torch.cuda.max_memory_allocated(device) - base
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call (on CUDA, with the device synchronised on both sides)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn, device) for _ in range(repeats))


def measure(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> Measurement:
    seconds = median_time(fn, device, repeats)
    return Measurement(seconds, peak_memory(fn, device))


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"
