"""Local storage: atomic put, folder replacement that never duplicates, hostile keys refused."""
from __future__ import annotations

import pytest

from app.storage import LocalStorage, StorageError, storage_from_url


def test_put_file_moves_source_and_reads_back(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    source = tmp_path / "upload.bin"
    source.write_bytes(b"abc" * 1000)
    storage.put_file("models/t1/abc", source)
    assert not source.exists()
    assert b"".join(storage.iter_bytes("models/t1/abc")) == b"abc" * 1000
    assert storage.local_path("models/t1/abc").read_bytes() == b"abc" * 1000
    with storage.fetch("models/t1/abc") as path:
        assert path.read_bytes() == b"abc" * 1000


def test_replace_folder_leaves_exactly_the_new_set(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    first = tmp_path / "first"
    first.mkdir()
    (first / "model.pt2").write_bytes(b"old")
    (first / "stale.bin").write_bytes(b"only in the first attempt")
    storage.replace_folder("jobs/j1", first)
    second = tmp_path / "second"
    second.mkdir()
    (second / "model.pt2").write_bytes(b"new")
    (second / "report.json").write_text("{}")
    names = storage.replace_folder("jobs/j1", second)
    assert names == ["model.pt2", "report.json"]
    assert sorted(p.name for p in (tmp_path / "root" / "jobs" / "j1").iterdir()) == names
    assert storage.local_path("jobs/j1/model.pt2").read_bytes() == b"new"
    assert not any((tmp_path / "root" / ".staging").iterdir())


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/./b"])
def test_hostile_keys_are_refused(tmp_path, key):
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError):
        storage.local_path(key)


def test_missing_object_is_a_clear_error(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError, match="missing object"):
        list(storage.iter_bytes("jobs/nope/model.pt2"))


@pytest.mark.parametrize("url", ["ftp://host/x", "file://otherhost/x", "gs://bucket"])
def test_unsupported_storage_urls(url):
    with pytest.raises(StorageError):
        storage_from_url(url)
