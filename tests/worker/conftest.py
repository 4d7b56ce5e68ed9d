"""Worker tests run against the session's fresh PostgreSQL database (migrated)."""
from __future__ import annotations

import uuid

import pytest

from app.config import get_settings


@pytest.fixture
def worker_db(pg_url, tmp_path, monkeypatch):
    from app.migrate import upgrade_database

    upgrade_database(pg_url)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("ZERODATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STORAGE_URL", (tmp_path / "storage").as_uri())
    get_settings.cache_clear()
    from sqlalchemy import delete

    from app.db import new_session
    from app.models import Job

    with new_session() as session:  # the sweep looks at every job: start each test with none
        session.execute(delete(Job))
        session.commit()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def queued_job(worker_db):
    """A tenant, a model row and a queued job; returns the job id."""
    from app.db import new_session
    from app.models import Job, StoredModel, Tenant

    with new_session() as session:
        tenant = Tenant(name=f"t-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        model = StoredModel(tenant_id=tenant.id, sha256=uuid.uuid4().hex * 2, size_bytes=1, format="pt2",
                            filename="m.pt2", params=1, prunable_layers=[], input_shape=None, warnings=[],
                            storage_key="models/x/y")
        session.add(model)
        session.flush()
        job = Job(tenant_id=tenant.id, model_id=model.id, config={}, queue="cpu", status="queued")
        session.add(job)
        session.commit()
        return job.id
