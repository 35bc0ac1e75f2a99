"""Timing: the median of repeated calls after warm-up, several cases taken in turns.

Every speed the package reports (the studies' inference times, the benchmarks) is
measured here. Warm-up calls come first (they fill caches: a CoordGate computes its gate
once in eval mode, CUDA loads its kernels); then the cases run in turns, repeat after
repeat, so that a change in machine load affects them all alike; the median of the
repeats is robust to the odd slow one. Two clocks are read: wall time and the CPU time of
the calling thread (``time.thread_time``), which a busy machine inflates far less (it does
not count time spent waiting for a core) but which means something only for
single-threaded work. CUDA runs asynchronously: given a CUDA ``device``, the helpers
synchronise it before starting a clock and before reading it again.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch

__all__ = ["CLOCKS", "adam_step", "median_seconds", "threads", "time_clocks", "time_interleaved"]

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread_cpu": time.thread_time}

Device = torch.device | str | None


def _synchronizer(device: Device) -> Callable[[], None]:
    if device is not None and torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_clocks(
    cases: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    *,
    device: Device = None,
) -> dict[str, dict[str, float]]:
    """Median seconds per call of each case on each of :data:`CLOCKS`, the cases run in
    turn ``repeats`` times after ``warmup`` calls each: ``{"wall": {case: s},
    "thread_cpu": {case: s}}``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    synchronize = _synchronizer(device)
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples = {clock: {name: [] for name in cases} for clock in CLOCKS}
    for _ in range(repeats):
        for name, fn in cases.items():
            synchronize()
            start = {clock: read() for clock, read in CLOCKS.items()}
            fn()
            synchronize()
            for clock, read in CLOCKS.items():
                samples[clock][name].append(read() - start[clock])
    return {
        clock: {name: statistics.median(values) for name, values in per_case.items()}
        for clock, per_case in samples.items()
    }


def time_interleaved(
    cases: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    *,
    device: Device = None,
) -> dict[str, float]:
    """Median wall seconds per call of each case, the cases run in turn (see
    :func:`time_clocks`)."""
    return time_clocks(cases, repeats, warmup, device=device)["wall"]


def median_seconds(
    fn: Callable[[], object], repeats: int, warmup: int = 1, *, device: Device = None
) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls.

    >>> median_seconds(lambda: sum(range(100)), repeats=3) >= 0
    True
    """
    return time_interleaved({"fn": fn}, repeats, warmup, device=device)["fn"]


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (thread CPU time means something only for
    single-threaded work), then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def adam_step(
    model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, *where, lr: float = 1e-3
) -> Callable[[], None]:
    """A case for the timers: one Adam step (rate ``lr``) on the MSE of
    ``model(inputs, *where)`` against ``target``; ``where`` places the inputs on the
    sensor (origin, full size) for the models that take it."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(inputs, *where), target).backward()
        optimiser.step()

    return step
