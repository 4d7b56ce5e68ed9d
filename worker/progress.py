"""The small protocol long-running work reports progress to.

The engine and the kernel compiler call `progress.update(...)` and `progress.check_cancelled()`;
the worker backs it with the job row, the CLI with a progress bar, tests with `NullProgress`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class JobCancelled(Exception):
    """Raised by `check_cancelled()` when the user cancelled the job; work stops at the next check."""


class Progress(Protocol):
    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        """`stage` is a short name ("synthesize", "prune", "recover", "compile", "measure"),
        `done` of `total` units within it (layers, steps), `detail` a human line ("layer3.1.conv2")."""

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was cancelled. Call between units of work."""


class NullProgress:
    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        pass

    def check_cancelled(self) -> None:
        pass


@dataclass
class RecordingProgress:
    """Keeps every update; handy in tests and for computing ETAs."""

    events: list[tuple[float, str, int, int, str]] = field(default_factory=list)

    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        self.events.append((time.monotonic(), stage, done, total, detail))

    def check_cancelled(self) -> None:
        pass
