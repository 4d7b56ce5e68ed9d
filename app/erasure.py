"""Erasing what a user stored: a finished job with its results, or a model with every job run on it.

Storage objects go first and the rows last: a failure half-way leaves rows that still point at what is left,
so repeating the request finishes the erasure. The other order could leave files no row points to, i.e. a
"deleted" model that is still on disk.
"""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.models import TERMINAL_STATUSES, Job, StoredModel
from app.storage import Storage, job_prefix


class StillActive(Exception):
    """Queued or running jobs would lose their input or results; they must be canceled first."""

    def __init__(self, job_ids: list[str]):
        if len(job_ids) == 1:
            super().__init__(f"job {job_ids[0]} is still queued or running: cancel it first "
                             f"(POST /v1/jobs/{job_ids[0]}/cancel) and delete once it has stopped")
            return
        shown = ", ".join(job_ids[:5]) + (f" and {len(job_ids) - 5} more" if len(job_ids) > 5 else "")
        super().__init__(f"{len(job_ids)} jobs ({shown}) are still queued or running: cancel them first "
                         "(POST /v1/jobs/{id}/cancel) and delete once they have stopped")


def erase_job(session: Session, storage: Storage, job: Job) -> None:
    """A terminal job never changes again (workers only claim queued or running rows), so checking its status
    once is enough."""
    if job.status not in TERMINAL_STATUSES:
        raise StillActive([job.id])
    storage.delete(job_prefix(job.id))
    session.execute(delete(Job).where(Job.id == job.id))  # artifact rows cascade
    session.commit()


def erase_model(session: Session, storage: Storage, model: StoredModel) -> None:
    """Deletes the upload and all its jobs. The model row is locked first, so a job
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
