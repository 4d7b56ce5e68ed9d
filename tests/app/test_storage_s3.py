"""S3 storage against an S3-compatible HTTP server (moto's standalone server on a free port)."""
from __future__ import annotations

import pytest

from app.storage import StorageError, storage_from_url
from tests.service_harness import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="zd-test")
    return storage_from_url("s3://zd-test/deploy1", endpoint_url=s3_endpoint, region="us-east-1")


def test_put_read_fetch_delete(s3, tmp_path):
    source = tmp_path / "upload"
    source.write_bytes(b"x" * 3_000_000)
    s3.put_file("models/t/abc", source)
    assert not source.exists() and s3.exists("models/t/abc")
    assert s3.local_path("models/t/abc") is None
    assert b"".join(s3.iter_bytes("models/t/abc")) == b"x" * 3_000_000
    with s3.fetch("models/t/abc") as path:
        assert path.stat().st_size == 3_000_000
    assert not path.exists()
    s3.delete("models/t/abc")
    assert not s3.exists("models/t/abc")
    with pytest.raises(StorageError, match="missing object"):
        list(s3.iter_bytes("models/t/abc"))
    with pytest.raises(StorageError, match="missing object"):
        with s3.fetch("models/t/abc"):
            pass


def test_replace_folder_keeps_exactly_one_set(s3, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    (first / "model.pt2").write_bytes(b"old")
    (first / "from-first-attempt.bin").write_bytes(b"stale")
    s3.replace_folder("jobs/j1", first)
    second = tmp_path / "second"
    second.mkdir()
    (second / "model.pt2").write_bytes(b"new")
    (second / "report.json").write_text("{}")
    assert s3.replace_folder("jobs/j1", second) == ["model.pt2", "report.json"]
    assert sorted(k.rsplit("/", 1)[-1] for k in s3._list("deploy1/jobs/j1/")) == ["model.pt2", "report.json"]
    assert b"".join(s3.iter_bytes("jobs/j1/model.pt2")) == b"new"


def test_bucket_is_required():
    with pytest.raises(StorageError, match="bucket"):
        storage_from_url("s3:///nobucket")
