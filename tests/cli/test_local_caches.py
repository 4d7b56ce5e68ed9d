"""Without arguments the CLI trims both of its default caches: synthetic inputs under ~/.cache/zerodata and
kernel builds under $ZERODATA_KERNEL_CACHE."""
import os
import time

from app.cli.local_caches import trim_local_caches
from app.config import get_settings


def test_both_default_caches_are_trimmed_to_the_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZERODATA_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setenv("ZERODATA_CACHE_MAX_BYTES", "10")
    get_settings.cache_clear()
    old = time.time() - 7200
    files = [tmp_path / "home" / ".cache" / "zerodata" / "synthetic" / "a.pt", tmp_path / "kernels" / "zd_b.so"]
    for path in files:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 100)
        os.utime(path, (old, old))
    try:
        trim_local_caches()
    finally:
        get_settings.cache_clear()
    assert not any(path.exists() for path in files)
