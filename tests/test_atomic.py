"""The one atomic writer: a file is replaced whole or not at all, and leaves no temporary."""

from __future__ import annotations

import os

import numpy as np
import pytest

from coordgate.atomic import atomic_write, atomic_write_text, replace_atomically, temporary_path


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / "a.bin", b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_writer_that_fails_halfway_leaves_no_partial_file(tmp_path):
    def half(tmp):
        tmp.write_bytes(b"half of it")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed"):
        replace_atomically(tmp_path / "new.npz", half)
    assert list(tmp_path.iterdir()) == []

    old = atomic_write_text(tmp_path / "kept.json", "{}")
    with pytest.raises(RuntimeError, match="killed"):
        replace_atomically(old, half)
    assert old.read_text() == "{}" and list(tmp_path.iterdir()) == [old]


def test_writes_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr("os.fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr("os.replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    atomic_write(tmp_path / "sub" / "a.bin", b"data")
    # the file before the rename, its directory after it
    assert events == ["fsync", "replace", "fsync"]
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"data"


def test_the_temporary_file_is_hidden_per_process_and_keeps_the_suffix(tmp_path):
    tmp = temporary_path(tmp_path / "field.npz")
    assert tmp.parent == tmp_path and tmp.name.startswith(".field.")
    assert str(os.getpid()) in tmp.name and tmp.suffix == ".npz"
    # numpy appends ".npz" to a name without it: the writer must find what it wrote
    path = replace_atomically(tmp_path / "field.npz", lambda t: np.savez(t, a=np.arange(3)))
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["field.npz"]
