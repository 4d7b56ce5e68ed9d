"""`create_app()`: the REST API under /v1, /healthz, the browser app (app.web) and /static."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from app import web
from app.api import api_router
from app.db import SessionDep

STATIC_DIR = Path(__file__).parent / "static"

DESCRIPTION = """Data-free model compression. Upload a model (`POST /v1/models`), start a job
(`POST /v1/jobs`), follow it (`GET /v1/jobs/{id}` or the SSE stream `/v1/jobs/{id}/events`) and
download its artifacts. Authenticate with `Authorization: Bearer <API key>` (`zerodata keys create`)."""


def create_app() -> FastAPI:
    app = FastAPI(title="zerodata", version="0.1.0", description=DESCRIPTION)
    app.include_router(api_router)

    @app.get("/healthz", tags=["health"])
    def healthz(session: SessionDep) -> dict:
        """200 when the API can reach its database."""
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:
            raise HTTPException(503, f"database unreachable: {exc.__class__.__name__}") from None
        return {"status": "ok"}

    app.include_router(web.router)  # the browser app: sign-in, upload, job pages
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
