"""The worker's cache stays under its cap: least recently used files go first, fresh ones never."""
from __future__ import annotations

import os
import time

from app.config import get_settings
from worker.cache_trim import trim_cache


def _file(path, size: int, age_s: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_oldest_files_go_first_until_under_the_cap(tmp_path):
    oldest = _file(tmp_path / "kernels" / "zd_a.so", 400, age_s=9000)
    middle = _file(tmp_path / "synthetic" / "b.pt", 400, age_s=8000)
    newest = _file(tmp_path / "kernels" / "units" / "tag" / "c.o", 400, age_s=7200)
    result = trim_cache(tmp_path, max_bytes=900, min_age_s=3600)
    assert (result.files_removed, result.bytes_removed, result.bytes_left) == (1, 400, 800)
    assert not oldest.exists() and middle.exists() and newest.exists()


def test_recently_written_files_survive_an_overfull_cache(tmp_path):
    old = _file(tmp_path / "old.so", 1000, age_s=7200)
    fresh = _file(tmp_path / "fresh.so", 1000, age_s=60)  # a concurrent job may be about to load it
    result = trim_cache(tmp_path, max_bytes=10, min_age_s=3600)
    assert not old.exists() and fresh.exists()
    assert result.bytes_left == 1000


def test_no_cap_and_missing_folder_remove_nothing(tmp_path):
    kept = _file(tmp_path / "a.so", 1000, age_s=7200)
    assert trim_cache(tmp_path, max_bytes=0).files_removed == 0
    assert kept.exists()
    assert trim_cache(tmp_path / "never-created", max_bytes=1).bytes_left == 0


def test_symlinks_are_removed_not_followed(tmp_path):
    outside = _file(tmp_path / "outside" / "precious.bin", 1000, age_s=9000)
    cache = tmp_path / "cache"
    cache.mkdir()
    link = cache / "link.so"
    link.symlink_to(outside)
    os.utime(link, (time.time() - 9000,) * 2, follow_symlinks=False)
    _file(cache / "big.so", 1000, age_s=8000)
    trim_cache(cache, max_bytes=1, min_age_s=3600)
    assert not link.is_symlink() and outside.exists()


def test_a_finished_job_trims_the_worker_cache(queued_job, monkeypatch):
    """Even a job that fails (its stored model is missing here) leaves the cache trimmed."""
    from worker.tasks import compress

    monkeypatch.setenv("ZERODATA_CACHE_MAX_BYTES", "100")
    get_settings.cache_clear()
    stale = _file(get_settings().cache_dir / "kernels" / "zd_stale.so", 1000, age_s=7200)
    assert compress(queued_job) == "failed"
    assert not stale.exists()
