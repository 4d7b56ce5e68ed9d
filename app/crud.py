"""Reads and writes the API needs. Keyword-only, session first; every read is scoped to a tenant,
so another tenant's id simply is not found."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import Job, StoredModel


def get_model(session: Session, *, tenant_id: str, model_id: str) -> StoredModel | None:
    return session.scalar(select(StoredModel).where(StoredModel.id == model_id, StoredModel.tenant_id == tenant_id))


def find_model_by_sha256(session: Session, *, tenant_id: str, sha256: str) -> StoredModel | None:
    return session.scalar(select(StoredModel).where(StoredModel.tenant_id == tenant_id, StoredModel.sha256 == sha256))


def create_model(session: Session, *, tenant_id: str, sha256: str, size_bytes: int, filename: str,
                 format: str, params: int | None, prunable_layers: list[str], input_shape: list[int] | None,
                 warnings: list[str], storage_key: str) -> tuple[StoredModel, bool]:
    """Insert the model row; returns (row, created). Two identical uploads racing end with one row."""
    row = StoredModel(tenant_id=tenant_id, sha256=sha256, size_bytes=size_bytes, filename=filename[:255],
                      format=format, params=params, prunable_layers=list(prunable_layers),
                      input_shape=list(input_shape) if input_shape is not None else None,
                      warnings=list(warnings), storage_key=storage_key)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = find_model_by_sha256(session, tenant_id=tenant_id, sha256=sha256)
        if existing is None:
            raise
        return existing, False
    return row, True


def list_models(session: Session, *, tenant_id: str, offset: int, limit: int) -> tuple[list[StoredModel], int]:
    where = StoredModel.tenant_id == tenant_id
    count = session.scalar(select(func.count()).select_from(StoredModel).where(where)) or 0
    rows = session.scalars(select(StoredModel).where(where)
                           .order_by(StoredModel.created_at.desc(), StoredModel.id).offset(offset).limit(limit))
    return list(rows), count


def create_job(session: Session, *, tenant_id: str, model_id: str, config: dict, queue: str,
               webhook_url: str | None) -> Job:
    job = Job(tenant_id=tenant_id, model_id=model_id, config=config, queue=queue, webhook_url=webhook_url,
              status="queued")
    session.add(job)
    session.commit()
    return job


def mark_enqueued(session: Session, *, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))
    session.commit()


def get_job(session: Session, *, tenant_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def list_jobs(session: Session, *, tenant_id: str, offset: int, limit: int,
              status: str | None = None, model_id: str | None = None) -> tuple[list[Job], int]:
    conditions = [Job.tenant_id == tenant_id]
    if status is not None:
        conditions.append(Job.status == status)
    if model_id is not None:
        conditions.append(Job.model_id == model_id)
    count = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id)
                           .offset(offset).limit(limit))
    return list(rows), count


def request_cancel(session: Session, *, job: Job) -> Job:
    """Queued jobs are canceled at once; running jobs get a flag their worker sees at the next check."""
    now = utcnow()
    done = session.execute(update(Job).where(Job.id == job.id, Job.status == "queued")
                           .values(status="canceled", cancel_requested=True, finished_at=now,
                                   progress_detail="canceled before it started"))
    if done.rowcount == 0:
        session.execute(update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True))
    session.commit()
    session.refresh(job)
    return job
