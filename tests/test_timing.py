"""The one timing helper: warm-up first, cases in turns, the median of the repeats."""

from __future__ import annotations

import pytest
import torch

from coordgate import timing
from coordgate.timing import median_seconds, time_clocks, time_interleaved


def test_warm_up_comes_first_then_the_cases_take_turns():
    calls = []
    cases = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    seconds = time_interleaved(cases, repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())


def test_the_median_ignores_one_slow_repeat(monkeypatch):
    # a fake clock: each call of the case advances it by the next duration
    durations = iter([1.0, 100.0, 2.0])
    now = [0.0]

    def case():
        now[0] += next(durations)

    monkeypatch.setitem(timing.CLOCKS, "wall", lambda: now[0])
    assert median_seconds(case, repeats=3, warmup=0) == 2.0


def test_both_clocks_are_read():
    seconds = time_clocks({"sum": lambda: sum(range(1000))}, repeats=2)
    assert set(seconds) == {"wall", "thread_cpu"} and set(seconds["wall"]) == {"sum"}


def test_a_cuda_device_is_synchronised_around_every_timed_call(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    median_seconds(lambda: events.append("call"), repeats=2, warmup=1, device="cuda:0")
    assert events == ["call"] + ["sync", "call", "sync"] * 2
    events.clear()
    median_seconds(lambda: events.append("call"), repeats=2, device=torch.device("cpu"))
    assert events == ["call"] * 3


@pytest.mark.parametrize("options", [dict(repeats=0), dict(repeats=2, warmup=-1)])
def test_bad_counts_are_rejected(options):
    with pytest.raises(ValueError, match="repeats|warmup"):
        median_seconds(lambda: None, **options)
