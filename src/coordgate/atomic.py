"""Atomic file writes: readers see the old file or the new one, never half of one.

Every file the package writes for later runs to read (checkpoints, training states,
caches, results, reports, calibrated fields) goes through here. The content is written
to a hidden temporary file in the target's directory (same file system, and a name of
this process's own, so concurrent writers never share it), flushed to disk, renamed
over the target with ``os.replace`` and the directory entry flushed too; on any error
the temporary file is removed and the old target is left as it was.

This module imports only the standard library, so every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "replace_atomically", "temporary_path"]


def temporary_path(path: str | os.PathLike) -> Path:
    """The hidden temporary file beside ``path`` that this process writes before the rename.

    It keeps ``path``'s suffix, because some writers choose the format from it
    (PIL) or append it when missing (``numpy.savez``).
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; other systems cannot open folders)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to create the new content at a temporary path, then move it
    over ``path`` durably (see the module docstring); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write the bytes ``data`` to ``path`` atomically; returns ``path``."""
    return replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write(path, text.encode())
