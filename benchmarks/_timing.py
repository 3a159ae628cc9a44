"""Shared timing helpers for the benchmark scripts: medians of repeated runs."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], *, repeats: int = 15, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    fns: dict, *, repeats: int = 15, warmup: int = 2, clock: Callable[[], float] = time.perf_counter
) -> dict:
    """Median seconds per entry, runs interleaved so that machine noise hits all alike.

    ``clock`` is ``time.perf_counter`` (wall) by default; ``time.process_time``
    (CPU time of the process) is steadier on a shared, oversubscribed machine.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def torch_route(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with the native kernels switched off for the duration of the call."""
    def run():
        before = os.environ.get("LOSSFN_NATIVE")
        os.environ["LOSSFN_NATIVE"] = "0"
        try:
            return fn()
        finally:
            if before is None:
                del os.environ["LOSSFN_NATIVE"]
            else:
                os.environ["LOSSFN_NATIVE"] = before
    return run
