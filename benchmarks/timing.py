"""Timing helpers for the benchmarks: interleaved repeats, medians, ratios.

The benchmarks run on shared machines. Cases are timed in turns so that machine noise
affects them alike, and single-threaded cases are also timed by the CPU time of the
calling thread (``time.thread_time``), which a busy machine inflates far less than wall
time: it does not count the time the thread waits for a core. Ratios of those medians
are what the benchmarks report.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["CLOCKS", "load", "ratios", "time_clocks", "time_interleaved"]

CLOCKS = {"wall": time.perf_counter, "thread_cpu": time.thread_time}


def time_clocks(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Median seconds per call of each case on each of ``CLOCKS``, the cases run in turn:
    ``{"wall": {case: s}, "thread_cpu": {case: s}}``. Thread CPU time means something only
    for single-threaded cases."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples = {clock: {name: [] for name in cases} for clock in CLOCKS}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = {clock: read() for clock, read in CLOCKS.items()}
            fn()
            for clock, read in CLOCKS.items():
                samples[clock][name].append(read() - start[clock])
    return {
        clock: {name: statistics.median(values) for name, values in per_case.items()}
        for clock, per_case in samples.items()
    }


def time_interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median wall seconds per call of each case, the cases run in turn."""
    return time_clocks(cases, repeats, warmup)["wall"]


def ratios(seconds: dict[str, dict[str, float]], pairs: dict[str, tuple[str, str]]) -> dict:
    """``{label: {clock: seconds[a] / seconds[b]}}`` for ``pairs = {label: (a, b)}``."""
    return {
        label: {clock: round(per[a] / per[b], 3) for clock, per in seconds.items()}
        for label, (a, b) in pairs.items()
    }


def load() -> dict:
    """The machine's load and threads, to record next to every timing."""
    return {
        "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
