"""Cosine learning-rate schedules that fit a time budget."""
from __future__ import annotations

import math
import time

PACE_AFTER_STEPS = 3  # steps timed before a deadline sets the schedule's length


class CosineSchedule:
    """`steps` steps of a cosine decay from `lr` to 0. With a deadline it times its first PACE_AFTER_STEPS steps and
    shortens itself to the steps the time left buys, so it still anneals instead of stopping mid-schedule (at a
    learning rate still near its peak); it stops at the deadline in any case."""

    def __init__(self, lr: float, steps: int, deadline: float | None):
        self.base_lr, self.total, self.deadline = lr, steps, deadline
        self.start = time.monotonic()

    def runs(self, step: int) -> bool:
        """Whether step `step` (from 0) runs."""
        if step >= self.total:
            return False
        if self.deadline is None:
            return True
        now = time.monotonic()
        if now > self.deadline:
            return False
        if step == PACE_AFTER_STEPS:
            affordable = step * (self.deadline - self.start) / max(now - self.start, 1e-9)
            self.total = min(self.total, max(step + 1, int(affordable)))
        return True

    def lr(self, step: int) -> float:
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * step / self.total))
