"""A job fits its worker's time limit when it can (the synthesis is cut to the budget the worker sets), and
Celery's soft time limit ends it as failed with a clear message when it cannot (its own service: tiny limits)."""
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
            ZERODATA_TASK_SOFT_TIME_LIMIT_S="60", ZERODATA_TASK_HARD_TIME_LIMIT_S="80",
            ZERODATA_BROKER_VISIBILITY_TIMEOUT_S="120")
        yield service
        service.stop()
    finally:
        harness.clear_redis_prefix(redis_url, prefix)
        harness.drop_database(name)


def test_a_synthesis_too_long_for_the_time_limit_is_cut_to_fit(limited_service):
    key = limited_service.create_key("limits-fit")
    with limited_service.client(key) as client:
        model = upload_tiny(client)
        job = create_job(client, model["id"], {**TINY_CONFIG, "synthetic_steps": 1_000_000})
        final = wait_terminal(client, job["id"], timeout=180)
        assert final["status"] == "succeeded", (final, limited_service.worker_logs())
        report = client.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
        # the worker's cap: 60% of its soft limit, less what loading the engine took
        assert 60 * 0.6 - 20 < report["config"]["time_budget_s"] < 60 * 0.6
        assert report["compression"]["synthesis_budget"]["reduced_from"]["steps"] == 1_000_000
        assert report["config"]["synthetic_steps"] < 1_000_000
        assert any("time budget cut the synthetic inputs" in w for w in report["warnings"])
        assert report["seconds"]["compress"] < 60 * 0.6 + 5  # the engine kept to the budget (+ loading, saving)


def test_soft_time_limit_fails_the_job_with_a_message(limited_service):
    key = limited_service.create_key("limits")
    with limited_service.client(key) as client:
        model = upload_tiny(client)
        # the layer-wise ADMM iterations are the one stage no budget bounds
        job = create_job(client, model["id"], {**TINY_CONFIG, "admm_iterations": 1_000_000})
        wait_for(client, job["id"], lambda j: j["status"] != "queued", what="started")
        final = wait_terminal(client, job["id"], timeout=180)
        assert final["status"] == "failed", (final, limited_service.worker_logs())
        assert final["error"] == "the job exceeded its time limit of 60 s"
        assert final["attempts"] == 1  # a limit is not a crash: no retry
