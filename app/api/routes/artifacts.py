"""List and download a job's artifacts (streamed from storage)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse

from app import crud
from app.auth import TenantDep
from app.db import SessionDep
from app.schemas import ArtifactPublic, Message, Page
from app.storage import get_storage

router = APIRouter(prefix="/jobs", tags=["artifacts"])
_NOT_FOUND = {404: {"model": Message}}
MEDIA_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8", ".zip": "application/zip"}


def _media_type(name: str) -> str:
    return next((t for ext, t in MEDIA_TYPES.items() if name.endswith(ext)), "application/octet-stream")


@router.get("/{job_id}/artifacts", response_model=Page[ArtifactPublic], responses=_NOT_FOUND)
def list_artifacts(job_id: str, request: Request, tenant: TenantDep, session: SessionDep) -> Page[ArtifactPublic]:
    """`model.<ext>` (same format as uploaded), `masks.safetensors`, `sparse.zip`, `report.json`,
    `report.html`: whichever the job produced. Empty until the job succeeded."""
    job = crud.get_job(session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    data = [ArtifactPublic(name=a.name, size_bytes=a.size_bytes, sha256=a.sha256,
                           url=str(request.url_for("download_artifact", job_id=job.id, name=a.name)))
            for a in job.artifacts]
    return Page[ArtifactPublic](data=data, count=len(data))


@router.get("/{job_id}/artifacts/{name}", name="download_artifact", responses={
    **_NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": "the file, streamed"}})
def download_artifact(job_id: str, name: str, tenant: TenantDep, session: SessionDep):
    job = crud.get_job(session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise HTTPException(404, "job not found")
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        raise HTTPException(404, f"job has no artifact named {name!r}")
    storage = get_storage()
    headers = {"X-Content-SHA256": artifact.sha256}
    local = storage.local_path(artifact.storage_key)
    if local is None and not storage.exists(artifact.storage_key):
        raise HTTPException(410, f"artifact {name!r} is no longer in storage")
    if local is not None:
        return FileResponse(local, media_type=_media_type(name), filename=name, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{name}"'
    headers["Content-Length"] = str(artifact.size_bytes)
    return StreamingResponse(storage.iter_bytes(artifact.storage_key), media_type=_media_type(name), headers=headers)
