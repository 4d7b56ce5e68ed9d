"""Helpers for end-to-end tests against a running service (real HTTP)."""
from __future__ import annotations

import json
import time

import httpx

from tests.app.helpers import tiny_pt2_bytes

# Tiny budgets: the real pipeline, a few seconds on the tiny model.
TINY_CONFIG = {"synthetic_samples": 16, "synthetic_steps": 5, "recovery_steps": 5, "fidelity_samples": 16,
               "admm_iterations": 5, "compile": False, "measure": False, "tune": False, "bench_runs": 3}


def upload_tiny(client: httpx.Client) -> dict:
    response = client.post("/v1/models", files={"file": ("tiny.pt2", tiny_pt2_bytes())})
    assert response.status_code in (200, 201), response.text
    return response.json()


def create_job(client: httpx.Client, model_id: str, config: dict) -> dict:
    response = client.post("/v1/jobs", json={"model_id": model_id, "config": config})
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(client: httpx.Client, job_id: str, predicate, timeout: float = 240.0, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} never reached {what or 'the expected state'}: {job}")
        time.sleep(0.3)


def wait_terminal(client: httpx.Client, job_id: str, timeout: float = 240.0) -> dict:
    return wait_for(client, job_id, lambda j: j["status"] in ("succeeded", "failed", "canceled"), timeout, "an end")


def read_events(client: httpx.Client, job_id: str, timeout: float = 240.0) -> list[tuple[str, dict]]:
    """Follow the SSE stream to its end; returns (event name, data) pairs."""
    events: list[tuple[str, dict]] = []
    name, data = None, []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and name:
                events.append((name, json.loads("".join(data))))
                if name == "end":
                    break
                name, data = None, []
    return events
