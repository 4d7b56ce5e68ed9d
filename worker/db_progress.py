"""`Progress` backed by the job row: what the engine reports becomes the job's stage, layer i of n,
overall percent and ETA; `check_cancelled` reads the row's cancel flag. Writes are throttled."""
from __future__ import annotations

import time

from app import job_state
from app.db import new_session
from worker.progress import JobCancelled

# Rough share of a job's wall time per stage, in pipeline order (unknown stages keep the percent).
STAGE_WEIGHTS = {"load": 2, "synthesize": 25, "prune": 35, "recover": 15, "fidelity": 3, "save": 2,
                 "compile": 11, "measure": 7}


def _stage_span(stage: str) -> tuple[float, float] | None:
    if stage not in STAGE_WEIGHTS:
        return None
    total = sum(STAGE_WEIGHTS.values())
    start = 0.0
    for name, weight in STAGE_WEIGHTS.items():
        if name == stage:
            return 100.0 * start / total, 100.0 * weight / total
        start += weight
    return None


class LostOwnership(Exception):
    """The job row no longer belongs to this attempt (the sweep handed it to another worker)."""


class DbProgress:
    def __init__(self, job_id: str, attempt: int, *, write_interval_s: float = 0.5, cancel_check_interval_s: float = 1.0):
        self.job_id, self.attempt = job_id, attempt
        self.write_interval_s, self.cancel_check_interval_s = write_interval_s, cancel_check_interval_s
        self.started = time.monotonic()
        self.percent = 0.0
        self.stage: str | None = None
        self.stage_started = self.started
        self.stage_seconds: dict[str, float] = {}
        self._last_write = 0.0
        self._last_cancel_check = 0.0

    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        now = time.monotonic()
        stage_changed = stage != self.stage
        if stage_changed:
            if self.stage is not None:
                self.stage_seconds[self.stage] = round(self.stage_seconds.get(self.stage, 0.0)
                                                       + now - self.stage_started, 3)
            self.stage, self.stage_started = stage, now
        span = _stage_span(stage)
        if span is not None:
            fraction = min(1.0, done / total) if total > 0 else 0.0
            self.percent = max(self.percent, span[0] + span[1] * fraction)
        finished_unit = total > 0 and done >= total
        if not (stage_changed or finished_unit or now - self._last_write >= self.write_interval_s):
            return
        self._last_write = now
        elapsed = now - self.started
        eta = elapsed * (100.0 - self.percent) / self.percent if self.percent >= 2.0 else None
        values = dict(progress_stage=stage[:64], progress_done=int(done), progress_total=int(total),
                      progress_detail=(detail or None) and detail[:500], progress_percent=round(self.percent, 2),
                      eta_seconds=round(eta, 1) if eta is not None else None, stage_seconds=dict(self.stage_seconds))
        with new_session() as session:
            if not job_state.write_progress(session, job_id=self.job_id, attempt=self.attempt, values=values):
                raise LostOwnership(f"job {self.job_id} attempt {self.attempt} no longer owns its row")

    def check_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < self.cancel_check_interval_s:
            return
        self._last_cancel_check = now
        with new_session() as session:
            if job_state.cancel_requested(session, job_id=self.job_id):
                raise JobCancelled(f"job {self.job_id} was canceled")

    def finished_stage_seconds(self) -> dict[str, float]:
        if self.stage is not None:
            self.stage_seconds[self.stage] = round(self.stage_seconds.get(self.stage, 0.0)
                                                   + time.monotonic() - self.stage_started, 3)
            self.stage = None
        return dict(self.stage_seconds)
