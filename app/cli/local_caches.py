"""The CLI's own caches get the service worker's cap (ZERODATA_CACHE_MAX_BYTES), trimmed after each run:
synthetic inputs under ~/.cache/zerodata, kernel builds under $ZERODATA_KERNEL_CACHE or the temp folder."""
from __future__ import annotations

from pathlib import Path


def trim_local_caches(*roots: Path) -> None:
    """Trim `roots`, or by default both of the CLI's caches, least recently used files first."""
    from app.config import get_settings
    from kernels.graph_compile import default_cache_dir
    from worker.cache_trim import trim_cache
    from worker.engine.synthetic import local_cache_dir

    for root in roots or (local_cache_dir(), default_cache_dir()):
        trim_cache(Path(root), get_settings().cache_max_bytes)
