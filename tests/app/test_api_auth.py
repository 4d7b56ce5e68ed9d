"""Bearer keys, browser cookie + CSRF double submit, hashed keys, and tenant isolation on every route."""
from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.db import new_session, utcnow
from app.models import ApiKey
from tests.app.conftest import new_key
from tests.app.helpers import stored_files, tiny_pt2_bytes, upload


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                                     {"Authorization": "Bearer zd_wrong"}, {"Authorization": "Bearer " + "x" * 5000}])
def test_missing_or_bad_keys_are_401(client, headers):
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/models"), ("POST", "/v1/jobs")):
        response = client.request(method, path, headers=headers, json={"model_id": "x"})
        assert response.status_code == 401, (method, path, headers)
        assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(client, api_key, auth):
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    with new_session() as session:
        session.execute(update(ApiKey).where(ApiKey.prefix == api_key[:11]).values(revoked_at=utcnow()))
        session.commit()
    assert client.get("/v1/jobs", headers=auth).status_code == 401


def test_keys_are_stored_hashed(client, api_key):
    with new_session() as session:
        rows = session.scalars(select(ApiKey)).all()
    assert all(api_key not in (row.key_hash, row.prefix) for row in rows)
    assert any(row.prefix == api_key[:11] for row in rows)


def test_cookie_auth_requires_csrf_for_unsafe_methods(client, api_key, settings_env):
    client.cookies.set("zd_key", api_key)
    try:
        assert client.get("/v1/jobs").status_code == 200
        refused = client.post("/v1/models", files={"file": ("m.pt2", tiny_pt2_bytes())})
        assert refused.status_code == 403 and stored_files(settings_env) == []
        client.cookies.set("zd_csrf", "token-123")
        assert client.post("/v1/models", files={"file": ("m.pt2", tiny_pt2_bytes())},
                           headers={"X-CSRF-Token": "wrong"}).status_code == 403
        model = client.post("/v1/models", files={"file": ("m.pt2", tiny_pt2_bytes())}, data={"csrf_token": "token-123"})
        assert model.status_code == 201, model.text
        body = {"model_id": model.json()["id"]}
        assert client.post("/v1/jobs", json=body).status_code == 403
        job = client.post("/v1/jobs", json=body, headers={"X-CSRF-Token": "token-123"})
        assert job.status_code == 201
        cancel_url = f"/v1/jobs/{job.json()['id']}/cancel"
        assert client.post(cancel_url, data={"csrf_token": "nope"}).status_code == 403
        assert client.post(cancel_url, data={"csrf_token": "token-123"}).json()["status"] == "canceled"
    finally:
        client.cookies.clear()


def test_bearer_auth_needs_no_csrf(client, auth):
    assert upload(client, auth).status_code == 201


def test_another_tenants_ids_are_404_everywhere(client, auth):
    model = upload(client, auth).json()
    job = client.post("/v1/jobs", headers=auth, json={"model_id": model["id"]}).json()
    intruder = {"Authorization": f"Bearer {new_key()}"}
    for method, path in (("GET", f"/v1/models/{model['id']}"), ("GET", f"/v1/jobs/{job['id']}"),
                         ("GET", f"/v1/jobs/{job['id']}/events"), ("POST", f"/v1/jobs/{job['id']}/cancel"),
                         ("GET", f"/v1/jobs/{job['id']}/artifacts"),
                         ("GET", f"/v1/jobs/{job['id']}/artifacts/report.json")):
        assert client.request(method, path, headers=intruder).status_code == 404, path
    assert client.post("/v1/jobs", headers=intruder, json={"model_id": model["id"]}).status_code == 404
    assert client.get("/v1/jobs", headers=intruder).json() == {"data": [], "count": 0}
    assert client.get("/v1/models", headers=intruder).json() == {"data": [], "count": 0}
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "queued"  # untouched
