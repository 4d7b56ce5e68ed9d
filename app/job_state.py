"""A job's life on the worker side, as conditional UPDATEs on its row (the row is the source of truth).

- `claim_job`: queued -> running, attempts += 1. Only one delivery of a message can win; a duplicate
  finds the row already running (or finished) and does nothing.
- progress and heartbeats are written only by the attempt that owns the row.
- `finish_job`: running -> succeeded | failed | canceled, artifacts recorded in the same transaction.
- `sweep`: running jobs whose worker went silent go back to queued (or fail once poisoned); returns the
  ids that must be sent to the broker again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import Artifact, Job

NEVER_SENT_GRACE_S = 30.0  # the API writes enqueued_at right after sending; give it that long
POISON_MESSAGE = ("gave up after {n} attempts: the worker died each time (out of memory, a time limit, "
                  "or a crash while loading the model)")


@dataclass
class Claim:
    outcome: str  # "claimed" | "duplicate" | "missing" | "poisoned" | "canceled"
    attempt: int = 0
    job: Job | None = None


def claim_job(session: Session, *, job_id: str, max_attempts: int, stale_after_s: float) -> Claim:
    now = utcnow()
    stale_cutoff = now - timedelta(seconds=stale_after_s)
    claimable = or_(Job.status == "queued", (Job.status == "running") & (Job.heartbeat_at < stale_cutoff))
    result = session.execute(
        update(Job).where(Job.id == job_id, claimable, Job.attempts < max_attempts, Job.cancel_requested.is_(False))
        .values(status="running", attempts=Job.attempts + 1, started_at=now, heartbeat_at=now, error=None,
                progress_stage=None, progress_done=0, progress_total=0, progress_detail=None,
                progress_percent=0.0, eta_seconds=None, stage_seconds={}))
    session.commit()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return Claim("missing")
    if result.rowcount == 1:
        return Claim("claimed", job.attempts, job)
    if job.status in ("queued", "running") and job.cancel_requested:
        _end(session, job_id, ("queued", "running"), status="canceled", error=None)
        return Claim("canceled", job.attempts, job)
    if job.status == "queued" and job.attempts >= max_attempts:
        _end(session, job_id, ("queued",), status="failed", error=POISON_MESSAGE.format(n=job.attempts))
        return Claim("poisoned", job.attempts, job)
    return Claim("duplicate", job.attempts, job)


def _end(session: Session, job_id: str, from_statuses: tuple[str, ...], *, status: str, error: str | None) -> bool:
    result = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(from_statuses))
                             .values(status=status, error=error, finished_at=utcnow(), eta_seconds=None))
    session.commit()
    return result.rowcount == 1


def _owned(job_id: str, attempt: int):
    return (Job.id == job_id) & (Job.status == "running") & (Job.attempts == attempt)


def write_progress(session: Session, *, job_id: str, attempt: int, values: dict) -> bool:
    """Progress columns (and the heartbeat); False when this attempt no longer owns the job."""
    result = session.execute(update(Job).where(_owned(job_id, attempt)).values(heartbeat_at=utcnow(), **values))
    session.commit()
    return result.rowcount == 1


def touch_heartbeat(session: Session, *, job_id: str, attempt: int) -> bool:
    return write_progress(session, job_id=job_id, attempt=attempt, values={})


def cancel_requested(session: Session, *, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def still_owned(session: Session, *, job_id: str, attempt: int) -> bool:
    return session.scalar(select(func.count()).select_from(Job).where(_owned(job_id, attempt))) == 1


def finish_job(session: Session, *, job_id: str, attempt: int, status: str, error: str | None = None,
               summary: dict | None = None, artifacts: list[dict] | None = None,
               stage_seconds: dict | None = None) -> bool:
    """Record the outcome; artifacts replace any rows an earlier attempt left. False if not ours any more."""
    values = dict(status=status, error=error, finished_at=utcnow(), eta_seconds=None)
    if summary is not None:
        values["summary"] = summary
    if stage_seconds is not None:
        values["stage_seconds"] = stage_seconds
    if status == "succeeded":
        values.update(progress_percent=100.0, progress_stage="done", progress_detail=None)
    result = session.execute(update(Job).where(_owned(job_id, attempt)).values(**values))
    if result.rowcount != 1:
        session.rollback()
        return False
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    for item in artifacts or []:
        session.add(Artifact(job_id=job_id, **item))
    session.commit()
    return True


def sweep(session: Session, *, max_attempts: int, stale_after_s: float, requeue_queued_after_s: float,
          busy_queues: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(id, queue) of jobs to send to the broker again: running jobs whose worker went silent, and jobs queued
    so long ago that their message was probably lost (a duplicate message is harmless: claims are conditional).
    Queued jobs of `busy_queues` (whose broker queue still holds messages) are only waiting, not lost."""
    now = utcnow()
    stale = (Job.status == "running") & (Job.heartbeat_at < now - timedelta(seconds=stale_after_s))
    session.execute(update(Job).where(stale, Job.attempts >= max_attempts)
                    .values(status="failed", finished_at=now, error=POISON_MESSAGE.format(n=max_attempts)))
    session.execute(update(Job).where(stale, Job.cancel_requested.is_(True))
                    .values(status="canceled", finished_at=now))
    revived = session.execute(update(Job).where(stale, Job.attempts < max_attempts)
                              .values(status="queued", enqueued_at=now, progress_detail="worker lost; re-queued")
                              .returning(Job.id, Job.queue)).all()
    lost_cutoff = now - timedelta(seconds=requeue_queued_after_s)
    # Never sent at all (the API could not reach the broker): re-send soon; sent long ago: maybe lost.
    never_sent = Job.enqueued_at.is_(None) & (Job.created_at < now - timedelta(seconds=NEVER_SENT_GRACE_S))
    waiting = never_sent | (Job.enqueued_at < lost_cutoff)
    resent = session.execute(update(Job).where(Job.status == "queued", waiting, Job.queue.not_in(busy_queues))
                             .values(enqueued_at=now)
                             .returning(Job.id, Job.queue)).all()
    session.commit()
    return [(row[0], row[1]) for row in [*revived, *resent]]
