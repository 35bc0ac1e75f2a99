"""Timing for the benchmarks: the library's interleaved medians, their ratios, the load.

The benchmarks run on shared machines. Cases are timed in turns by
:mod:`coordgate.timing` so that machine noise affects them alike, and single-threaded
cases are also timed by the CPU time of the calling thread, which a busy machine inflates
far less than wall time. Ratios of those medians are what the benchmarks report.
"""

from __future__ import annotations

import os

import torch

from coordgate.timing import CLOCKS, threads, time_clocks, time_interleaved

__all__ = ["CLOCKS", "load", "ratios", "threads", "time_clocks", "time_interleaved"]


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
