"""A worker killed with SIGKILL mid-job: the sweep re-queues the job, a new worker finishes it, and
exactly one set of artifacts exists."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.service_client import TINY_CONFIG, create_job, upload_tiny, wait_for, wait_terminal
from tests.service_harness import kill_group

pytestmark = pytest.mark.e2e
SLOW_CONFIG = {**TINY_CONFIG, "synthetic_steps": 40}


def test_sigkill_mid_job_then_new_worker_finishes_once(running_service):
    key = running_service.create_key("e2e-kill")
    with running_service.client(key) as client:
        model = upload_tiny(client)
        job = create_job(client, model["id"], SLOW_CONFIG)
        wait_for(client, job["id"], lambda j: j["status"] == "running" and j["progress"]["stage"], what="running")
        for worker in running_service.workers:
            kill_group(worker)  # the whole worker: main process and the child running the job
        time.sleep(1)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"  # nobody has noticed yet
        running_service.start_worker()
        final = wait_terminal(client, job["id"], timeout=300)
        assert final["status"] == "succeeded", (final, running_service.worker_logs())
        assert final["attempts"] == 2
        names = [a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]]
        assert len(names) == len(set(names)) and "model.pt2" in names
        stored = sorted(p.name for p in (Path(running_service.home) / "storage" / "jobs" / job["id"]).iterdir())
        assert stored == sorted(names)
        leftovers = list((Path(running_service.home) / "work" / "jobs").glob(f"{job['id']}-*"))
        assert leftovers == []
