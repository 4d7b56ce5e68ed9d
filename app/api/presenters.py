"""Rows -> public response bodies."""
from __future__ import annotations

from app.models import Job, StoredModel
from app.schemas import JobPublic, ModelPublic, Progress, Timings


def model_public(row: StoredModel, *, deduplicated: bool = False) -> ModelPublic:
    return ModelPublic.model_validate(row).model_copy(update={"deduplicated": deduplicated})


def job_public(job: Job) -> JobPublic:
    queued = run = None
    if job.started_at is not None:
        queued = max(0.0, (job.started_at - job.created_at).total_seconds())
        if job.finished_at is not None:
            run = max(0.0, (job.finished_at - job.started_at).total_seconds())
    return JobPublic(
        id=job.id, model_id=job.model_id, status=job.status, config=job.config or {}, queue=job.queue,
        attempts=job.attempts, cancel_requested=job.cancel_requested, error=job.error, summary=job.summary,
        webhook_url=job.webhook_url, created_at=job.created_at,
        progress=Progress(stage=job.progress_stage, done=job.progress_done, total=job.progress_total,
                          detail=job.progress_detail, percent=round(job.progress_percent or 0.0, 2),
                          eta_seconds=job.eta_seconds),
        timings=Timings(created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                        queued_seconds=queued, run_seconds=run, stages=job.stage_seconds or {}),
    )
