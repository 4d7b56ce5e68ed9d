"""The whole flow over real HTTP: uvicorn + a Celery worker subprocess, PostgreSQL, Redis, the real pipeline."""
from __future__ import annotations

import pytest
import torch

from tests.e2e.service_client import TINY_CONFIG, create_job, read_events, upload_tiny, wait_for, wait_terminal
from tests.tiny_models import INPUT_SHAPE

pytestmark = pytest.mark.e2e


def test_upload_compress_follow_and_download(running_service, tmp_path):
    key = running_service.create_key("e2e-flow")
    with running_service.client(key) as client:
        model = upload_tiny(client)
        job = create_job(client, model["id"], TINY_CONFIG)
        events = read_events(client, job["id"])
        final = client.get(f"/v1/jobs/{job['id']}").json()
        assert final["status"] == "succeeded", (final, running_service.worker_logs())
        statuses = [data["status"] for name, data in events if name == "job"]
        assert statuses[-1] == "succeeded" and events[-1][0] == "end"
        percents = [data["progress"]["percent"] for name, data in events if name == "job"]
        assert percents == sorted(percents) and percents[-1] == 100
        assert final["attempts"] == 1 and final["timings"]["run_seconds"] > 0

        listing = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        names = [a["name"] for a in listing["data"]]
        assert {"model.pt2", "report.json"} <= set(names) and listing["count"] == len(names)
        downloaded = tmp_path / "model.pt2"
        response = client.get(f"/v1/jobs/{job['id']}/artifacts/model.pt2")
        assert response.status_code == 200
        downloaded.write_bytes(response.content)
        program = torch.export.load(str(downloaded))
        assert program.module()(torch.randn(*INPUT_SHAPE)).shape == (1, 10)
        report = client.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
        assert report["config"]["synthetic_steps"] == 5


def test_cancel_a_running_job(running_service):
    key = running_service.create_key("e2e-cancel")
    with running_service.client(key) as client:
        model = upload_tiny(client)
        slow = {**TINY_CONFIG, "synthetic_steps": 100_000, "synthetic_samples": 64}
        job = create_job(client, model["id"], slow)
        wait_for(client, job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"], what="running")
        response = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 200 and response.json()["cancel_requested"]
        final = wait_terminal(client, job["id"], timeout=120)
        assert final["status"] == "canceled", (final, running_service.worker_logs())
        assert client.get(f"/v1/jobs/{job['id']}/artifacts").json()["count"] == 0


def test_engine_errors_fail_the_job_with_their_message(running_service):
    key = running_service.create_key("e2e-error")
    with running_service.client(key) as client:
        model = upload_tiny(client)
        job = create_job(client, model["id"], {**TINY_CONFIG, "input_shape": [1, 3, 2, 2]})
        final = wait_terminal(client, job["id"])
        assert final["status"] == "failed" and final["error"], final
        assert "internal error" not in final["error"], final["error"]
