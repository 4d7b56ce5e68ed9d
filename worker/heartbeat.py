"""Touches the job row every few seconds while a job runs, so a silent row means a dead worker."""
from __future__ import annotations

import logging
import threading

from app import job_state
from app.db import new_session

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, job_id: str, attempt: int, interval_s: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id, self.attempt, self.interval_s = job_id, attempt, interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                with new_session() as session:
                    if not job_state.touch_heartbeat(session, job_id=self.job_id, attempt=self.attempt):
                        return
            except Exception:
                log.exception("heartbeat for job %s failed", self.job_id)

    def stop(self) -> None:
        self.stopped.set()
