"""Keep a cache folder under a size cap by deleting its least recently used files.

The worker's cache (synthetic inputs, compiled kernel libraries and units) grows with every model it sees: one
224x224 ResNet-18 job leaves ~300 MB of kernel builds. Each cache refreshes a file's mtime when it reuses it, so
mtime order is use order. Files younger than `min_age_s` are never removed: a job running next to the trim may be
about to load what it just built.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrimResult:
    files_removed: int
    bytes_removed: int
    bytes_left: int


def trim_cache(root: Path, max_bytes: int, *, min_age_s: float = 3600.0) -> TrimResult:
    """Delete the oldest files under `root` until at most `max_bytes` remain (max_bytes <= 0: no cap)."""
    files = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue  # removed by someone else meanwhile
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = freed = 0
    if max_bytes <= 0 or total <= max_bytes:
        return TrimResult(0, 0, total)
    newest_removable = time.time() - min_age_s
    for mtime, size, path in sorted(files):
        if total - freed <= max_bytes or mtime > newest_removable:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        removed, freed = removed + 1, freed + size
    if removed:
        log.info("cache %s: removed %d least recently used files (%d bytes), %d bytes left", root, removed, freed,
                 total - freed)
    return TrimResult(removed, freed, total - freed)
