"""Live job progress as Server-Sent Events: the job row is polled and every change is sent as an
`event: job` carrying the same JSON as `GET /v1/jobs/{id}`; the stream ends after a terminal status."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.presenters import job_public
from app.auth import TenantDep
from app.config import get_settings
from app.db import SessionDep, new_session
from app.models import TERMINAL_STATUSES
from app.schemas import Message

router = APIRouter(prefix="/jobs", tags=["jobs"])
KEEPALIVE_S = 15.0


def _snapshot(tenant_id: str, job_id: str) -> tuple[str, str] | None:
    """(job JSON, status) or None once the job is gone."""
    with new_session() as session:
        job = crud.get_job(session, tenant_id=tenant_id, job_id=job_id)
        return None if job is None else (job_public(job).model_dump_json(), job.status)


@router.get("/{job_id}/events", responses={
    404: {"model": Message},
    200: {"content": {"text/event-stream": {}},
          "description": "`event: job` with the job JSON on every change; `event: end` once finished"}})
async def job_events(job_id: str, request: Request, tenant: TenantDep, session: SessionDep) -> StreamingResponse:
    if crud.get_job(session, tenant_id=tenant.id, job_id=job_id) is None:
        raise HTTPException(404, "job not found")
    interval = get_settings().sse_poll_interval_s
    tenant_id = tenant.id
    session.close()  # give the connection back: a stream may stay open for hours; each poll takes its own

    async def stream():
        last, last_sent, sequence = None, time.monotonic(), 0
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            snapshot = await run_in_threadpool(_snapshot, tenant_id, job_id)
            if snapshot is None:
                yield "event: end\ndata: {\"status\": \"deleted\"}\n\n"
                return
            data, status = snapshot
            if data != last:
                sequence += 1
                yield f"id: {sequence}\nevent: job\ndata: {data}\n\n"
                last, last_sent = data, time.monotonic()
                if status in TERMINAL_STATUSES:
                    yield f"event: end\ndata: {data}\n\n"
                    return
            elif time.monotonic() - last_sent > KEEPALIVE_S:
                yield ": keepalive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(interval)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
