"""Celery's soft time limit ends a job as failed with a clear message (its own service: tiny limits)."""
from __future__ import annotations

import uuid

import pytest

from tests import service_harness as harness
from tests.e2e.service_client import TINY_CONFIG, create_job, upload_tiny, wait_for, wait_terminal

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited_service(tmp_path_factory, redis_url):
    name, url = harness.create_database()
    prefix = f"zdlim-{uuid.uuid4().hex[:8]}:"
    try:
        service = harness.start_service(
            database_url=url, home=tmp_path_factory.mktemp("limited"), redis_url=redis_url, redis_prefix=prefix,
            ZERODATA_TASK_SOFT_TIME_LIMIT_S="20", ZERODATA_TASK_HARD_TIME_LIMIT_S="40",
            ZERODATA_BROKER_VISIBILITY_TIMEOUT_S="60")
        yield service
        service.stop()
    finally:
        harness.clear_redis_prefix(redis_url, prefix)
        harness.drop_database(name)


def test_soft_time_limit_fails_the_job_with_a_message(limited_service):
    key = limited_service.create_key("limits")
    with limited_service.client(key) as client:
        model = upload_tiny(client)
        job = create_job(client, model["id"], {**TINY_CONFIG, "synthetic_steps": 1_000_000})
        wait_for(client, job["id"], lambda j: j["status"] != "queued", what="started")
        final = wait_terminal(client, job["id"], timeout=120)
        assert final["status"] == "failed", (final, limited_service.worker_logs())
        assert final["error"] == "the job exceeded its time limit of 20 s"
        assert final["attempts"] == 1  # a limit is not a crash: no retry
