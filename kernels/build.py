"""Compile generated source into a shared library: hash-keyed cache, atomic replace, compiler errors surfaced."""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from kernels.errors import KernelBuildError
from kernels.isa import ISA_FLAGS, check_isa, find_compiler

BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno", "-fno-strict-aliasing"]
COMPILE_TIMEOUT_S = 1800
MAX_SOURCE_BYTES = 512 << 20

__all__ = ["KernelBuildError", "build_library", "compiler_flags", "compiler_version"]


def compiler_flags(isa: str) -> list[str]:
    return BASE_FLAGS + ISA_FLAGS[check_isa(isa)]


@functools.lru_cache(maxsize=8)
def compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelBuildError(f"cannot run the C++ compiler {compiler!r}: {exc}") from None
    if done.returncode != 0:
        raise KernelBuildError(f"the C++ compiler {compiler!r} failed to report its version", done.stderr)
    return done.stdout.strip()


def resolve_compiler(compiler: str | None) -> str:
    found = find_compiler(compiler)
    if found is None:
        wanted = repr(compiler) if compiler else "$CXX, g++, c++ or clang++"
        raise KernelBuildError(f"no C++ compiler found ({wanted} not on PATH); install g++ to build kernels")
    return found


def cache_key(source: str, flags: list[str], version: str) -> str:
    h = hashlib.sha256()
    for part in (source, "\0".join(flags), version):
        h.update(part.encode())
        h.update(b"\0\0")
    return h.hexdigest()


def build_library(source: str, *, isa: str, cache_dir: Path, compiler: str | None = None) -> Path:
    """Compile `source` for `isa` (or reuse the cached build) and return the .so path."""
    if not isinstance(source, str) or not source.strip():
        raise KernelBuildError("empty kernel source")
    if len(source) > MAX_SOURCE_BYTES:
        raise KernelBuildError(f"kernel source of {len(source)} bytes exceeds {MAX_SOURCE_BYTES}")
    cxx = resolve_compiler(compiler)
    flags = compiler_flags(isa)
    key = cache_key(source, flags, compiler_version(cxx))
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"zd_{key[:24]}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="zd_build_", dir=cache_dir) as tmp:
        src = Path(tmp) / "kernels.cpp"
        src.write_text(source)
        out = Path(tmp) / "kernels.so"
        try:
            done = subprocess.run([cxx, *flags, str(src), "-o", str(out)], capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise KernelBuildError(f"compiling kernels took longer than {COMPILE_TIMEOUT_S}s") from None
        except OSError as exc:
            raise KernelBuildError(f"cannot run the C++ compiler {cxx!r}: {exc}") from None
        if done.returncode != 0 or not out.exists():
            raise KernelBuildError(f"C++ compiler {cxx} failed (exit {done.returncode})", done.stderr[-20000:])
        # Same directory, so the rename is atomic: readers see the whole library or none.
        os.replace(out, target)
    return target
