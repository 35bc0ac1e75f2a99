"""One writer per directory: an advisory lock (``fcntl.flock``) on ``DIR/.lock``.

The kernel releases the lock when its holder exits, however it exits (``kill -9``
included), so a crashed build never leaves a stale lock. The holder writes its pid into
the lock file for the message others see while they wait.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp, directory_lock(tmp, what="build"):
...     pass
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DirectoryBusyError", "directory_lock"]

LOCK_FILE = ".lock"


class DirectoryBusyError(RuntimeError):
    """Another process holds the directory's lock and the caller chose not to wait."""


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "pid unknown"


@contextmanager
def directory_lock(path: str | os.PathLike, *, what: str, wait: bool = True) -> Iterator[None]:
    """Hold ``path``'s lock for the block (``path`` is created if missing).

    Another holder: with ``wait`` print "another WHAT of PATH is running (pid N);
    waiting…" to stderr and block until it is released; without, raise
    :class:`DirectoryBusyError` with that message."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another {what} of {directory} is running ({_holder(lock)})"
            if not wait:
                raise DirectoryBusyError(f"{message}; not waiting (--no-wait)") from None
            print(f"{message}; waiting…", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
