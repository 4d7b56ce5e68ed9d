"""Round-robin timing for A/B benchmarks: every contender once per round, so drift hits all of them alike."""
from __future__ import annotations

import time
from typing import Callable


def clock_for(threads: int) -> Callable[[], float]:
    """Thread CPU time at one thread (a busy machine disturbs it far less), wall time otherwise."""
    return time.thread_time if threads == 1 else time.perf_counter


def time_round_robin(fns: dict[str, Callable[[], object]], runs: int, clock: Callable[[], float],
                     warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds per call of each contender over `runs` rounds, after `warmup` untimed calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(runs):
        for label, fn in fns.items():
            t0 = clock()
            fn()
            times[label].append((clock() - t0) * 1e3)
    return times
