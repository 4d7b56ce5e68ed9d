"""Shared fixtures for the real PostgreSQL and Redis (never mocked) and a running service.

- `pg_url`: a fresh database for this test session (dropped afterwards), SQLAlchemy URL.
- `redis_url` + `redis_prefix`: the test Redis database and a key prefix unique to this session.
- `running_service`: uvicorn + one Celery worker subprocess on those, schema migrated
  (see tests/service_harness.py: `.url`, `.create_key(tenant)`, `.start_worker()`, `.client(key)`).
Under CI=true an unreachable PostgreSQL or Redis is an error; elsewhere those tests are skipped.
"""
from __future__ import annotations

import os
import uuid

import pytest

from tests import service_harness as harness

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # scripts/test.sh runs one pytest-xdist worker per core: each gets one torch thread, or the workers' OpenMP
    # threads spin-wait on each other's cores (measured: the engine's tests 4-6x slower). Tests of threaded code
    # set their thread counts themselves.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _unavailable(what: str, exc: Exception):
    message = f"{what} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url():
    try:
        name, url = harness.create_database()
    except Exception as exc:  # noqa: BLE001 - any connection problem means "no server here"
        _unavailable("PostgreSQL at 127.0.0.1:5432 (database test)", exc)
    yield url
    from app.db import engine_for

    engine_for(url).dispose()
    harness.drop_database(name)


@pytest.fixture(scope="session")
def redis_url():
    import redis

    try:
        redis.Redis.from_url(harness.REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        _unavailable("Redis at 127.0.0.1:6379", exc)
    return harness.REDIS_URL


@pytest.fixture(scope="session")
def redis_prefix(redis_url):
    prefix = f"zdtest-{uuid.uuid4().hex[:10]}:"
    yield prefix
    harness.clear_redis_prefix(redis_url, prefix)


@pytest.fixture(scope="session")
def running_service(tmp_path_factory, redis_url):
    """The real API and one real worker on a database and key prefix of their own."""
    try:
        name, url = harness.create_database()
    except Exception as exc:  # noqa: BLE001
        _unavailable("PostgreSQL at 127.0.0.1:5432 (database test)", exc)
    prefix = f"zdsvc-{uuid.uuid4().hex[:10]}:"
    try:
        service = harness.start_service(database_url=url, home=tmp_path_factory.mktemp("service"),
                                        redis_url=redis_url, redis_prefix=prefix)
        yield service
        service.stop()
    finally:
        harness.clear_redis_prefix(redis_url, prefix)
        harness.drop_database(name)


@pytest.fixture(scope="module")
def service(running_service):
    """The running service, with a worker even if an earlier test stopped or killed the last one."""
    if not running_service.workers:
        running_service.start_worker()
    return running_service
