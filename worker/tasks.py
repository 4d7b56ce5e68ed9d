"""The one Celery task: claim the job row, run it, record the outcome. Thin on purpose."""
from __future__ import annotations

import logging

from app import job_state
from app.broker import TASK_NAME
from app.config import get_settings
from app.db import new_session
from worker.celery_app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name=TASK_NAME)
def compress(job_id: str) -> str:
    """A duplicate delivery, or a message for a finished or canceled job, does nothing."""
    settings = get_settings()
    with new_session() as session:
        claim = job_state.claim_job(session, job_id=job_id, max_attempts=settings.max_attempts,
                                    stale_after_s=settings.stale_after_s)
        if claim.outcome == "claimed":
            job = claim.job
            job.model  # loaded now, while the session is open
    if claim.outcome != "claimed":
        log.info("job %s not run: %s", job_id, claim.outcome)
        return claim.outcome
    from worker.job_runner import run_claimed_job

    return run_claimed_job(job, claim.attempt, settings)
