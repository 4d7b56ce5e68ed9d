"""POST/GET /v1/jobs, cancel, artifacts list, pagination and config validation (real Postgres + Redis)."""
from __future__ import annotations

import json

import pytest
import redis

from tests.app.helpers import finish_with_artifacts, upload


@pytest.fixture
def model_id(client, auth) -> str:
    return upload(client, auth).json()["id"]


def create(client, auth, model_id, **body):
    return client.post("/v1/jobs", headers=auth, json={"model_id": model_id, **body})


def queued_messages(settings, queue: str) -> list[dict]:
    client = redis.Redis.from_url(settings.broker_url)
    raw = client.lrange(f"{settings.broker_key_prefix}{queue}", 0, -1)
    client.close()
    return [json.loads(m) for m in raw]


def test_create_job_fills_engine_defaults_and_enqueues(client, auth, model_id, settings_env):
    response = create(client, auth, model_id, config={"entries": 3, "connectivity": 0.5})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["model_id"] == model_id
    assert job["config"]["entries"] == 3 and job["config"]["library_size"] == 8 and job["config"]["compile"] is True
    assert job["progress"]["percent"] == 0 and job["error"] is None
    messages = queued_messages(settings_env, "cpu")
    assert any(m["headers"]["task"] == "worker.compress" and m["headers"]["argsrepr"] == repr([job["id"]])
               for m in messages)
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["id"] == job["id"]


def test_cuda_jobs_go_to_gpu_queue(client, auth, model_id):
    job = create(client, auth, model_id, config={"device": "cuda"}).json()
    assert job["queue"] == "gpu"


@pytest.mark.parametrize("config, fragment", [
    ({"no_such_option": 1}, "no_such_option"),
    ({"entries": "four"}, "entries"),
    ({"entries": 0}, "entries"),
    ({"connectivity": 1.0}, "connectivity"),
    ({"connectivity": [0.5]}, "connectivity"),
    ({"distill_lr": -0.001}, "distill_lr"),
    ({"distill_lr": 0}, "distill_lr"),
    ({"synthetic": "real-data"}, "synthetic"),
    ({"device": "tpu"}, "device"),
    ({"input_shape": "1x3x32x32"}, "input_shape"),
    ({"cache_dir": "/etc"}, "cache_dir"),  # pipeline internals are not user options
])
def test_invalid_config_is_422(client, auth, model_id, config, fragment):
    response = create(client, auth, model_id, config=config)
    assert response.status_code == 422
    assert fragment in json.dumps(response.json()["detail"])


def test_malformed_bodies(client, auth, model_id):
    bad_json = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=b'{"model_id": ')
    assert bad_json.status_code == 422
    assert client.post("/v1/jobs", headers=auth, json={}).status_code == 422
    assert client.post("/v1/jobs", headers=auth, json={"model_id": 5}).status_code == 422
    assert client.post("/v1/jobs", headers=auth, json=[model_id]).status_code == 422
    assert client.post("/v1/jobs", headers=auth, json={"model_id": model_id, "surprise": 1}).status_code == 422
    assert client.post("/v1/jobs", headers=auth, json={"model_id": "x" * 10_000}).status_code == 422
    assert create(client, auth, "00000000-0000-0000-0000-000000000000").status_code == 404


def test_webhook_url_follows_operator_policy(client, auth, model_id):
    refused = create(client, auth, model_id, webhook_url="http://169.254.169.254/latest/meta-data")
    assert refused.status_code == 422 and "webhook_url refused" in refused.json()["detail"]
    accepted = create(client, auth, model_id, webhook_url="https://hooks.example.com/zerodata")
    assert accepted.status_code == 201 and accepted.json()["webhook_url"] == "https://hooks.example.com/zerodata"


def test_pagination_newest_first(client, auth, model_id):
    ids = [create(client, auth, model_id, config={"seed": i}).json()["id"] for i in range(5)]
    pages = [client.get("/v1/jobs", headers=auth, params={"offset": o, "limit": 2}).json() for o in (0, 2, 4)]
    assert [p["count"] for p in pages] == [5, 5, 5]
    seen = [j["id"] for p in pages for j in p["data"]]
    assert seen == list(reversed(ids))
    assert client.get("/v1/jobs", headers=auth, params={"offset": 10}).json() == {"data": [], "count": 5}
    assert client.get("/v1/jobs", headers=auth, params={"status": "queued"}).json()["count"] == 5
    assert client.get("/v1/jobs", headers=auth, params={"status": "succeeded"}).json()["count"] == 0
    for params in ({"limit": 0}, {"limit": 1000}, {"offset": -1}, {"limit": "ten"}, {"status": "exploded"}):
        assert client.get("/v1/jobs", headers=auth, params=params).status_code == 422


def test_cancel_queued_job(client, auth, model_id):
    job = create(client, auth, model_id).json()
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert canceled.json()["timings"]["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 409 and "canceled" in again.json()["detail"]


def test_artifacts_empty_until_success(client, auth, model_id):
    job = create(client, auth, model_id).json()
    assert client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json() == {"data": [], "count": 0}
    missing = client.get(f"/v1/jobs/{job['id']}/artifacts/model.pt2", headers=auth)
    assert missing.status_code == 404 and "model.pt2" in missing.json()["detail"]
    assert client.get(f"/v1/jobs/{job['id']}/artifacts/..%2F..%2Fetc%2Fpasswd", headers=auth).status_code == 404


def test_events_of_a_finished_job_end_at_once(client, auth, model_id):
    job = create(client, auth, model_id).json()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    response = client.get(f"/v1/jobs/{job['id']}/events", headers=auth)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.startswith(("id:", "event:"))]
    assert "event: job" in events[0] and '"status":"canceled"' in events[0]
    assert events[-1].startswith("event: end")


def test_health_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/models", "/v1/models/{model_id}", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
                 "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/artifacts", "/v1/jobs/{job_id}/artifacts/{name}"):
        assert path in paths
    assert "multipart/form-data" in paths["/v1/models"]["post"]["requestBody"]["content"]


def test_artifact_download_streams_stored_bytes_and_410_when_gone(client, auth, model_id, tmp_path):
    from app.db import new_session
    from app.models import Artifact

    job = create(client, auth, model_id).json()
    finish_with_artifacts(job["id"], tmp_path / "out", {"report.json": b'{"ok": true}'})
    with new_session() as session:  # a row whose object is missing from storage
        session.add(Artifact(job_id=job["id"], name="model.pt2", size_bytes=1, sha256="d" * 64,
                             storage_key=f"jobs/{job['id']}/model.pt2"))
        session.commit()
    listing = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json()
    assert [a["name"] for a in listing["data"]] == ["model.pt2", "report.json"]
    assert listing["data"][1]["url"].endswith(f"/v1/jobs/{job['id']}/artifacts/report.json")
    report = client.get(f"/v1/jobs/{job['id']}/artifacts/report.json", headers=auth)
    assert report.status_code == 200 and report.json() == {"ok": True}
    assert 'filename="report.json"' in report.headers["content-disposition"]
    gone = client.get(f"/v1/jobs/{job['id']}/artifacts/model.pt2", headers=auth)
    assert gone.status_code == 410
