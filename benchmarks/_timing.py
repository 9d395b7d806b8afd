"""The one timing loop the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def milliseconds(fn: Callable[[], Any], calls: int) -> list[float]:
    """Wall-clock milliseconds of each of `calls` calls of `fn`, timed one by one."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times
