"""Create, read, list, cancel and delete compression jobs. The job row is written first, then its id is
sent to the broker by task name; a lost message is re-sent by the worker's sweep."""
from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy.exc import IntegrityError

from app import crud
from app.api.presenters import job_public
from app.auth import TenantDep
from app.broker import enqueue_job, queue_for
from app.config import get_settings
from app.db import SessionDep
from app.erasure import StillActive, erase_job
from app.models import TERMINAL_STATUSES
from app.schemas import JobCreate, JobPublic, Message, Page
from app.storage import get_storage
from app.webhook_policy import validate_webhook_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"])
_NOT_FOUND = {404: {"model": Message}}


@router.post("", status_code=201, response_model=JobPublic, responses={**_NOT_FOUND, 422: {"model": Message}})
def create_job(body: JobCreate, tenant: TenantDep, session: SessionDep) -> JobPublic:
    """Start compressing one of your models. Every `config` field is optional (defaults are the
    engine's); unknown fields are refused. `device: cuda` jobs run on the GPU workers' queue."""
    model = crud.get_model(session, tenant_id=tenant.id, model_id=body.model_id)
    if model is None:
        raise HTTPException(404, "model not found")
    settings = get_settings()
    if body.webhook_url is not None:
        try:
            validate_webhook_url(body.webhook_url, settings)
        except ValueError as exc:
            raise HTTPException(422, f"webhook_url refused: {exc}") from None
    config = body.config.pipeline_config()
    try:
        job = crud.create_job(session, tenant_id=tenant.id, model_id=model.id, config=config,
                              queue=queue_for(config), webhook_url=body.webhook_url)
    except IntegrityError:  # the model was deleted between the read above and this insert
        session.rollback()
        raise HTTPException(404, "model not found") from None
    try:
        enqueue_job(job.id, job.queue, settings)
        crud.mark_enqueued(session, job_id=job.id)
    except Exception:  # the row is the truth: the sweep re-sends jobs whose message never left
        log.exception("could not enqueue job %s; the sweep will retry", job.id)
    session.refresh(job)
    return job_public(job)


@router.get("", response_model=Page[JobPublic])
def list_jobs(tenant: TenantDep, session: SessionDep, offset: int = Query(0, ge=0),
              limit: int = Query(50, ge=1, le=200),
              status: Literal["queued", "running", "succeeded", "failed", "canceled"] | None = None,
              model_id: str | None = Query(None, max_length=64)) -> Page[JobPublic]:
    """Newest first."""
    rows, count = crud.list_jobs(session, tenant_id=tenant.id, offset=offset, limit=limit,
                                 status=status, model_id=model_id)
    return Page[JobPublic](data=[job_public(j) for j in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=_NOT_FOUND)
def read_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JobPublic:
    job = crud.get_job(session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    return job_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={**_NOT_FOUND, 409: {"model": Message}})
def cancel_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JobPublic:
    """A queued job is canceled at once; a running one stops at its next progress check
    (`cancel_requested` is true until then)."""
    job = crud.get_job(session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    if job.status in TERMINAL_STATUSES:
        raise HTTPException(409, f"job already {job.status}")
    return job_public(crud.request_cancel(session, job=job))


@router.delete("/{job_id}", status_code=204, responses={**_NOT_FOUND, 409: {"model": Message}})
def delete_job(job_id: str, tenant: TenantDep, session: SessionDep) -> Response:
    """Erase a finished, failed or canceled job: its artifacts in storage, then its record. A queued or
    running job must be canceled first (409). The uploaded model stays."""
    job = crud.get_job(session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    try:
        erase_job(session, get_storage(), job)
    except StillActive as exc:
        raise HTTPException(409, str(exc)) from None
    return Response(status_code=204)
