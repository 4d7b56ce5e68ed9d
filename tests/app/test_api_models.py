"""POST/GET /v1/models: streamed upload, sha-256, dedup per tenant, size cap, malformed bodies."""
from __future__ import annotations

import hashlib

from tests.app.conftest import MAX_UPLOAD_BYTES, new_key
from tests.app.helpers import stored_files, tiny_pt2_bytes, upload


def test_upload_reports_format_summary_and_hash(client, auth, settings_env):
    response = upload(client, auth)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == hashlib.sha256(tiny_pt2_bytes()).hexdigest()
    assert body["format"] == "pt2" and body["filename"] == "tiny.pt2"
    assert body["size_bytes"] == len(tiny_pt2_bytes())
    assert body["prunable_layers"] and body["params"] > 0
    assert body["deduplicated"] is False
    assert client.get(f"/v1/models/{body['id']}", headers=auth).json()["sha256"] == body["sha256"]
    assert len([p for p in stored_files(settings_env) if "models" in p.parts]) == 1


def test_same_bytes_deduplicate_per_tenant(client, auth, settings_env):
    first = upload(client, auth).json()
    again = upload(client, auth, filename="renamed.pt2")
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["deduplicated"]
    other = upload(client, {"Authorization": f"Bearer {new_key()}"})
    assert other.status_code == 201 and other.json()["id"] != first["id"]
    listing = client.get("/v1/models", headers=auth).json()
    assert listing["count"] == 1 and [m["id"] for m in listing["data"]] == [first["id"]]


def test_oversize_upload_is_refused_and_nothing_stored(client, auth, settings_env):
    response = upload(client, auth, content=b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413
    assert "too large" in response.json()["detail"] and str(MAX_UPLOAD_BYTES) in response.json()["detail"]
    assert stored_files(settings_env) == []


def test_oversize_upload_without_content_length_stops_streaming(client, auth, settings_env):
    boundary = "zdboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pt2\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 40):  # ~4.5 MiB, more than cap + form overhead
            yield b"\1" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/models", headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                           content=body())
    assert response.status_code == 413
    assert stored_files(settings_env) == []


def test_missing_file_field(client, auth, settings_env):
    response = client.post("/v1/models", headers=auth, files={"model": ("x.pt2", tiny_pt2_bytes())})
    assert response.status_code == 400 and "'file'" in response.json()["detail"]
    assert stored_files(settings_env) == []


def test_not_multipart(client, auth):
    response = client.post("/v1/models", headers=auth, json={"file": "abc"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["detail"]


def test_malformed_multipart(client, auth, settings_env):
    response = client.post("/v1/models", headers={**auth, "Content-Type": "multipart/form-data; boundary=abc"},
                           content=b"--abc\r\nthis is not a header block\r\n\r\n\xff\xfe--")
    assert response.status_code == 400
    assert stored_files(settings_env) == []


def test_empty_file(client, auth, settings_env):
    response = upload(client, auth, content=b"")
    assert response.status_code == 400 and "empty" in response.json()["detail"]


def test_two_file_parts_are_refused(client, auth, settings_env):
    response = client.post("/v1/models", headers=auth, files=[("file", ("a.pt2", b"aaaa")), ("file", ("b.pt2", b"bb"))])
    assert response.status_code == 400 and "exactly one" in response.json()["detail"]
    assert stored_files(settings_env) == []


def test_unknown_format_is_refused_by_intake(client, auth, settings_env):
    response = upload(client, auth, content=b"MZ\x90\x00 definitely not a model" * 100, filename="model.pt2")
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]
    assert stored_files(settings_env) == []


def test_hostile_filename_is_only_display_text(client, auth, settings_env):
    response = upload(client, auth, filename="../../etc/passwd")
    assert response.status_code == 201
    assert response.json()["filename"] == "passwd"
    assert all("etc" not in p.parts for p in stored_files(settings_env))


def test_unknown_model_is_404(client, auth):
    assert client.get("/v1/models/00000000-0000-0000-0000-000000000000", headers=auth).status_code == 404
    assert client.get("/v1/models/not-a-uuid", headers=auth).status_code == 404
