"""One OS file lock helper for every writer that must go one at a time on a machine."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_held = threading.local()  # the lock files this thread holds: taking one again nests instead of deadlocking


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on lock_file (created with its folder when absent) for the block; the kernel
    drops it when the holder dies, so a killed writer never leaves the lock taken. Re-entrant within a
    thread, so a step that needs the lock over several calls (check, ingest, close) can hold it around a
    call that takes it too; other threads and processes wait."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(lock_file)
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if key in held:
        yield
        return
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)
