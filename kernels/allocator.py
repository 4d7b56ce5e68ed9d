"""Keep freed memory in the process instead of handing it back to the kernel after every op.

glibc returns large freed blocks to the kernel (mmap'd chunks, heap top past the trim threshold), so the
next call that needs the same size page-faults it in again. torch's dense convolutions allocate fresh
scratch and outputs per call: the ResNet-18 stem (7x7, 3 -> 64 channels at 224x224) took ~460 page faults
per call here, 1.6 ms instead of 0.95 ms at 2 threads, and 2.7 ms instead of 1.2 inside the whole model
(2026-11-30, docs/benchmarks/kernels.md). ONNX Runtime avoids the same cost with its own arena. Process-wide
and applied once; a no-op where the C library is not glibc. ZD_KEEP_FREED_MEMORY=0 turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks below it come from
# the heap; the trim threshold keeps up to 1 GiB of freed heap for reuse.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply once per process; True when glibc took the settings."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("ZD_KEEP_FREED_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc: nothing to tune
                return False
            _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _applied
