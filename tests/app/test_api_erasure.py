"""DELETE /v1/jobs/{id} and DELETE /v1/models/{id}: what a user stored is really gone, from storage and the
database, and nothing is lost while a job still needs it (real Postgres + Redis, local storage)."""
from __future__ import annotations

import pytest

from tests.app.conftest import new_key
from tests.app.helpers import finish_with_artifacts, stored_files, upload

MODEL_BYTES = b"pruned model bytes"


@pytest.fixture
def model_id(client, auth) -> str:
    return upload(client, auth).json()["id"]


def finished_job(client, auth, model_id, folder) -> str:
    job_id = client.post("/v1/jobs", headers=auth, json={"model_id": model_id}).json()["id"]
    finish_with_artifacts(job_id, folder, {"model.pt2": MODEL_BYTES, "report.json": b"{}"})
    return job_id


def job_files(settings, job_id: str) -> list:
    return [p for p in stored_files(settings) if f"/jobs/{job_id}/" in p.as_posix()]


def test_deleting_a_finished_job_erases_its_artifacts_and_keeps_the_model(client, auth, model_id, settings_env,
                                                                         tmp_path):
    job_id = finished_job(client, auth, model_id, tmp_path / "out")
    assert len(job_files(settings_env, job_id)) == 2
    response = client.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 204 and response.content == b""
    assert job_files(settings_env, job_id) == []
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/artifacts/model.pt2", headers=auth).status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 404  # a repeat finds nothing
    assert client.get(f"/v1/models/{model_id}", headers=auth).status_code == 200


def test_a_queued_job_is_not_deleted_until_canceled(client, auth, model_id):
    job_id = client.post("/v1/jobs", headers=auth, json={"model_id": model_id}).json()["id"]
    refused = client.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "canceled"
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204


def test_deleting_a_model_erases_the_upload_and_every_job(client, auth, model_id, settings_env, tmp_path):
    first = finished_job(client, auth, model_id, tmp_path / "a")
    second = finished_job(client, auth, model_id, tmp_path / "b")
    canceled = client.post("/v1/jobs", headers=auth, json={"model_id": model_id}).json()["id"]
    client.post(f"/v1/jobs/{canceled}/cancel", headers=auth)
    assert len(stored_files(settings_env)) == 5  # the upload + two artifacts per finished job
    assert client.delete(f"/v1/models/{model_id}", headers=auth).status_code == 204
    assert stored_files(settings_env) == []
    assert client.get(f"/v1/models/{model_id}", headers=auth).status_code == 404
    for job_id in (first, second, canceled):
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404
    assert client.get("/v1/jobs", headers=auth).json()["count"] == 0
    again = upload(client, auth)  # the same bytes are a new upload now, not a duplicate of the erased one
    assert again.status_code == 201 and again.json()["id"] != model_id


def test_a_model_with_an_active_job_is_kept_whole(client, auth, model_id, settings_env, tmp_path):
    done = finished_job(client, auth, model_id, tmp_path / "out")
    queued = client.post("/v1/jobs", headers=auth, json={"model_id": model_id}).json()["id"]
    before = sorted(stored_files(settings_env))
    refused = client.delete(f"/v1/models/{model_id}", headers=auth)
    assert refused.status_code == 409
    assert queued in refused.json()["detail"] and "cancel" in refused.json()["detail"]
    assert sorted(stored_files(settings_env)) == before
    assert client.get(f"/v1/jobs/{done}/artifacts/model.pt2", headers=auth).content == MODEL_BYTES


def test_a_job_for_a_model_deleted_meanwhile_is_404_not_500(client, auth, model_id, monkeypatch):
    from app import crud
    from app.db import new_session
    from app.erasure import erase_model
    from app.storage import get_storage

    real_get_model = crud.get_model

    def get_then_lose(session, **kw):  # the model is read, then erased by another request before the insert
        row = real_get_model(session, **kw)
        with new_session() as other:
            erase_model(other, get_storage(), real_get_model(other, **kw))
        return row

    monkeypatch.setattr(crud, "get_model", get_then_lose)
    response = client.post("/v1/jobs", headers=auth, json={"model_id": model_id})
    assert response.status_code == 404 and response.json()["detail"] == "model not found"


def test_another_tenant_cannot_delete_or_probe(client, auth, model_id, settings_env, tmp_path):
    job_id = finished_job(client, auth, model_id, tmp_path / "out")
    stranger = {"Authorization": f"Bearer {new_key()}"}
    assert client.delete(f"/v1/jobs/{job_id}", headers=stranger).status_code == 404
    assert client.delete(f"/v1/models/{model_id}", headers=stranger).status_code == 404
    assert client.delete(f"/v1/models/{model_id}").status_code == 401
    assert len(stored_files(settings_env)) == 3
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "x" * 5000, "..", "%2E%2E%2Fmodels", "'; DROP TABLE jobs; --"])
def test_malformed_ids_are_404_and_touch_nothing(client, auth, model_id, settings_env, bad_id):
    before = sorted(stored_files(settings_env))
    for path in (f"/v1/jobs/{bad_id}", f"/v1/models/{bad_id}"):
        assert client.delete(path, headers=auth).status_code in (404, 405)
    assert sorted(stored_files(settings_env)) == before
    assert client.get(f"/v1/models/{model_id}", headers=auth).status_code == 200
