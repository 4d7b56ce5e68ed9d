"""Erasing what a user stored: a finished job with its results, or a model with every job run on it.

Storage objects go first and the rows last: a failure half-way leaves rows that still point at what is left,
so repeating the request finishes the erasure. The other order could leave files no row points to, i.e. a
"deleted" model that is still on disk.
"""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import TERMINAL_STATUSES, Job, StoredModel
from app.storage import Storage


class StillActive(Exception):
    """Queued or running jobs would lose their input or results; they must be canceled first."""

    def __init__(self, job_ids: list[str]):
        self.job_ids = job_ids
        shown = ", ".join(job_ids[:5]) + (f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else "")
        super().__init__(f"{len(job_ids)} job(s) still queued or running ({shown}): cancel them "
                         "(POST /v1/jobs/{id}/cancel) and delete once they have stopped")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def erase_job(session: Session, storage: Storage, job: Job) -> None:
    """A terminal job never changes again (workers only claim queued or running rows), so checking its status
    once is enough."""
    if job.status not in TERMINAL_STATUSES:
        raise StillActive([job.id])
    storage.delete(job_prefix(job.id))
    session.execute(delete(Job).where(Job.id == job.id))  # artifact rows cascade
    session.commit()


def erase_model(session: Session, storage: Storage, model: StoredModel) -> int:
    """Deletes the upload and all its jobs; returns how many jobs went. The model row is locked first, so a job
    created for it meanwhile either commits before (and is seen here) or fails its foreign-key check after."""
    session.execute(select(StoredModel.id).where(StoredModel.id == model.id).with_for_update())
    jobs = session.execute(select(Job.id, Job.status).where(Job.model_id == model.id)).all()
    active = [job_id for job_id, status in jobs if status not in TERMINAL_STATUSES]
    if active:
        session.rollback()
        raise StillActive(active)
    for job_id, _ in jobs:
        storage.delete(job_prefix(job_id))
    storage.delete(model.storage_key)
    session.execute(delete(StoredModel).where(StoredModel.id == model.id))  # jobs and their artifacts cascade
    session.commit()
    return len(jobs)
