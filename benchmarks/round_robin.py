"""Round-robin timing for A/B benchmarks: every contender once per round, so drift hits all of them alike."""
from __future__ import annotations

import time
from typing import Callable

from kernels.allocator import keep_freed_memory


def clock_for(threads: int) -> Callable[[], float]:
    """Thread CPU time at one thread (a busy machine disturbs it far less), wall time otherwise."""
    return time.thread_time if threads == 1 else time.perf_counter


def time_round_robin(fns: dict[str, Callable[[], object]], runs: int, clock: Callable[[], float],
                     warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds per call of each contender over `runs` rounds, after `warmup` untimed calls each.

    Freed memory stays in the process, as in a loaded package (kernels/allocator.py): otherwise a contender timed
    right after torch's dense conv page-faults its output in again (the ResNet-18 stem alone, 1 thread, AMD EPYC
    Zen 4: 3.4 ms after torch, 2.2 ms otherwise; docs/benchmarks/kernels.md, session 22)."""
    keep_freed_memory()
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
