"""The versioned REST API (`/v1`)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import artifacts, events, jobs, models

api_router = APIRouter(prefix="/v1")
api_router.include_router(models.router)
api_router.include_router(jobs.router)
api_router.include_router(events.router)
api_router.include_router(artifacts.router)
