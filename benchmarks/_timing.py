"""The one timing loop the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def milliseconds_each(fn: Callable[[Any], Any], inputs: Iterable[Any]) -> list[float]:
    """Wall-clock milliseconds of `fn(x)` for each x of `inputs`, timed one by one."""
    times = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        times.append(1000 * (time.perf_counter() - start))
    return times


def milliseconds(fn: Callable[[], Any], calls: int) -> list[float]:
    """Wall-clock milliseconds of each of `calls` calls of `fn`, timed one by one."""
    return milliseconds_each(lambda _: fn(), range(calls))
