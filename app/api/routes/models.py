"""Upload, read and delete models. The upload is streamed to disk, checked by `app.intake` (which executes
nothing), deduplicated per tenant by sha-256, and only then moved into storage."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app import crud
from app.api.presenters import model_public
from app.auth import CSRF_FIELD, CSRF_HEADER, CallerDep, TenantDep, csrf_matches
from app.config import get_settings
from app.db import SessionDep
from app.erasure import StillActive, erase_model
from app.intake import IntakeError, inspect_upload
from app.schemas import Message, ModelPublic, Page
from app.storage import get_storage
from app.upload import UploadError, receive_upload

router = APIRouter(prefix="/models", tags=["models"])

_UPLOAD_DOC = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "the model: torch.export .pt2, ONNX or TorchScript"}}}}}}}
_ERRORS = {400: {"model": Message}, 401: {"model": Message}, 403: {"model": Message},
           413: {"model": Message}, 422: {"model": Message}}


@router.post("", status_code=201, response_model=ModelPublic, openapi_extra=_UPLOAD_DOC,
             responses={200: {"model": ModelPublic, "description": "already uploaded by this tenant"}, **_ERRORS})
async def upload_model(request: Request, response: Response, caller: CallerDep, session: SessionDep) -> ModelPublic:
    """Upload a model as multipart field `file`. The format is detected from the content; unsafe or
    malformed files are refused with a 4xx and nothing is stored. Same bytes again: the existing model (200)."""
    settings = get_settings()
    try:
        upload = await receive_upload(request, work_dir=settings.work_dir / "uploads",
                                      max_bytes=settings.max_upload_bytes)
    except UploadError as exc:
        raise HTTPException(exc.status_code, exc.message) from None
    try:
        submitted = request.headers.get(CSRF_HEADER) or upload.fields.get(CSRF_FIELD)
        if caller.via_cookie and not csrf_matches(request, submitted):
            raise HTTPException(403, "missing or wrong CSRF token")
        tenant_id = caller.tenant.id
        existing = await run_in_threadpool(crud.find_model_by_sha256, session, tenant_id=tenant_id,
                                           sha256=upload.sha256)
        if existing is not None:
            response.status_code = 200
            return model_public(existing, deduplicated=True)
        try:
            summary = await run_in_threadpool(inspect_upload, upload.path, max_bytes=settings.max_upload_bytes)
        except IntakeError as exc:
            raise HTTPException(getattr(exc, "status_code", 422), str(exc)) from None
        key = f"models/{tenant_id}/{upload.sha256}"
        await run_in_threadpool(get_storage().put_file, key, upload.path)
        row, created = await run_in_threadpool(
            crud.create_model, session, tenant_id=tenant_id, sha256=upload.sha256, size_bytes=upload.size_bytes,
            filename=upload.filename, format=summary.format, params=summary.params,
            prunable_layers=summary.prunable_layers, input_shape=summary.input_shape,
            warnings=summary.warnings, storage_key=key)
        if not created:
            response.status_code = 200
        return model_public(row, deduplicated=not created)
    finally:
        upload.discard()


@router.get("", response_model=Page[ModelPublic])
def list_models(tenant: TenantDep, session: SessionDep, offset: int = Query(0, ge=0),
                limit: int = Query(50, ge=1, le=200)) -> Page[ModelPublic]:
    rows, count = crud.list_models(session, tenant_id=tenant.id, offset=offset, limit=limit)
    return Page[ModelPublic](data=[model_public(r) for r in rows], count=count)


@router.get("/{model_id}", response_model=ModelPublic, responses={404: {"model": Message}})
def read_model(model_id: str, tenant: TenantDep, session: SessionDep) -> ModelPublic:
    row = crud.get_model(session, tenant_id=tenant.id, model_id=model_id)
    if row is None:
        raise HTTPException(404, "model not found")
    return model_public(row)


@router.delete("/{model_id}", status_code=204, responses={404: {"model": Message}, 409: {"model": Message}})
def delete_model(model_id: str, tenant: TenantDep, session: SessionDep) -> Response:
    """Erase an uploaded model and every job run on it (results included) from storage and the database.
    Refused (409, nothing deleted) while any of its jobs is queued or running: cancel those first."""
    row = crud.get_model(session, tenant_id=tenant.id, model_id=model_id)
    if row is None:
        raise HTTPException(404, "model not found")
    try:
        erase_model(session, get_storage(), row)
    except StillActive as exc:
        raise HTTPException(409, str(exc)) from None
    return Response(status_code=204)
