"""Pair caches under concurrent use, with real processes: racing builds, a rebuild while
another process reads, and --no-wait."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from coordgate.cli import main
from coordgate.data.pairs import PairCache
from coordgate.locking import directory_lock

BUILD = ["dataset", "build", "--source", "synthetic", "--size", "32", "--no-noise", "--quiet"]


def _build_process(out, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "coordgate.cli", *BUILD, "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _same_cache(a: PairCache, b: PairCache) -> None:
    assert a.manifest["key"] == b.manifest["key"]
    for name in ("sharp", "blurred", "split", "source"):
        np.testing.assert_array_equal(a.array(name), b.array(name))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A single build of the parameters the races use (seed 0)."""
    out = tmp_path_factory.mktemp("single") / "cache"
    assert main([*BUILD, "--n", "48", "--out", str(out)]) == 0
    return PairCache(out)


def test_two_builds_racing_end_cleanly_with_one_cache(tmp_path, reference):
    out = tmp_path / "cache"
    racers = [_build_process(out, "--n", "48") for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in racers]
    for process, output in zip(racers, outputs):
        assert process.returncode == 0, output
        assert "Traceback" not in output and "Bus error" not in output
    # one built it; the other built it first or waited for it and reused it
    assert sum("built PairCache" in o for o in outputs) >= 1
    assert all("built PairCache" in o or "reused" in o for o in outputs)
    _same_cache(PairCache(out), reference)
    assert not list(out.glob(".partial-*"))


def test_a_second_build_waits_or_with_no_wait_fails_at_once(tmp_path, reference):
    out = tmp_path / "cache"
    with directory_lock(out, what="build"):  # this process is "another build"
        refused = _build_process(out, "--n", "48", "--no-wait")
        output = refused.communicate(timeout=120)[0].decode()
        assert refused.returncode == 2 and "Traceback" not in output
        assert f"another build of {out} is running (pid {os.getpid()}); not waiting" in output
        waiting = _build_process(out, "--n", "48")
        # Hold the lock until the second build says it waits (however loaded the machine).
        said = waiting.stdout.readline().decode()
        assert f"another build of {out} is running (pid {os.getpid()}); waiting…" in said
        time.sleep(0.5)
        assert waiting.poll() is None  # blocked on the lock
    output = said + waiting.communicate(timeout=300)[0].decode()
    assert waiting.returncode == 0, output
    _same_cache(PairCache(out), reference)


READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from coordgate.data.pairs import PairCache, PairDataset

    cache_dir, reference_dir, ready, go = map(Path, sys.argv[1:5])
    data = PairDataset(cache_dir, "train", crop=16, crops_per_frame=4, seed=3)
    reference = PairDataset(reference_dir, "train", crop=16, crops_per_frame=4, seed=3)
    generation = data.cache.generation
    first = data[0]
    ready.write_text("1")
    while not go.exists():
        time.sleep(0.02)
    for i in range(len(data)):  # the rest of the epoch, after the rebuild swapped in
        item, expected = data[i], reference[i]
        assert np.array_equal(item["blurred"], expected["blurred"]), i
        assert np.array_equal(item["sharp"], expected["sharp"]), i
    assert data.cache.generation == generation
    print("epoch done", len(data), "items of generation", generation)
    print("reopened: generation", PairCache(cache_dir).generation, "seed",
          PairCache(cache_dir).manifest["parameters"]["seed"])
    """
)


def test_rebuild_while_another_process_reads_an_epoch(tmp_path, reference):
    out = tmp_path / "cache"
    assert main([*BUILD, "--n", "48", "--out", str(out)]) == 0
    ready, go = tmp_path / "ready", tmp_path / "go"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(out), str(reference.path), str(ready), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), reader.stdout.read().decode()
    # another seed, forced: every array changes and the old generation's files are deleted
    assert main([*BUILD, "--n", "48", "--seed", "1", "--force", "--out", str(out)]) == 0
    go.write_text("1")
    output = reader.communicate(timeout=120)[0].decode()
    assert reader.returncode == 0, output  # no SIGBUS, no error
    assert "epoch done" in output and "seed 1" in output
    assert PairCache(out).manifest["parameters"]["seed"] == 1


def test_a_cache_whose_arrays_do_not_fit_its_manifest_is_refused(tmp_path):
    out = tmp_path / "cache"
    assert main([*BUILD, "--n", "8", "--out", str(out)]) == 0
    cache = PairCache(out)
    np.save(out / cache.files["blurred"], np.zeros((3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="do not belong together"):
        PairCache(out)
    (out / cache.files["sharp"]).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        PairCache(out)
