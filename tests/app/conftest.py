"""In-process API tests: the real app (TestClient) on the session's fresh PostgreSQL database,
a local storage folder and the real Redis broker (under this session's key prefix)."""
from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # small, so the oversize tests stay cheap


@pytest.fixture(scope="session")
def migrated_pg(pg_url):
    from app.migrate import upgrade_database

    upgrade_database(pg_url)
    return pg_url


@pytest.fixture
def settings_env(migrated_pg, redis_url, redis_prefix, tmp_path, monkeypatch):
    """Point `get_settings()` at the test services; restored after the test."""
    monkeypatch.setenv("DATABASE_URL", migrated_pg)
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("ZERODATA_BROKER_KEY_PREFIX", redis_prefix)
    monkeypatch.setenv("STORAGE_URL", (tmp_path / "storage").as_uri())
    monkeypatch.setenv("ZERODATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZERODATA_MAX_UPLOAD_BYTES", str(MAX_UPLOAD_BYTES))
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def client(settings_env):
    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


def new_key(tenant: str | None = None) -> str:
    from app.auth import create_api_key
    from app.db import new_session

    with new_session() as session:
        _, key = create_api_key(session, tenant_name=tenant or f"tenant-{uuid.uuid4().hex[:8]}")
    return key


@pytest.fixture
def api_key(settings_env) -> str:
    return new_key()


@pytest.fixture
def auth(api_key) -> dict:
    return {"Authorization": f"Bearer {api_key}"}
