"""Compile generated source into a shared library: hash-keyed cache, atomic replace, compiler errors surfaced."""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kernels.errors import KernelBuildError
from kernels.isa import ISA_FLAGS, check_isa, find_compiler
from kernels.unit_cache import UnitCache, mark_used

BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno", "-fno-strict-aliasing"]
COMPILE_TIMEOUT_S = 1800
MAX_SOURCE_BYTES = 512 << 20
# Generated sources put this line between the shared prelude and each layer, so a big library can be compiled as
# several translation units in parallel (a whole ResNet-56 library is ~6 MB and took ~30 s in one g++ run), and
# a later, bigger source links the units it contains instead of compiling them again (unit_cache.py). Each unit
# repeats the prelude (~2 s of g++ time), so only sources of at least UNIT_BYTES per unit are split.
LAYER_MARK = "\n// zd:layer\n"
UNIT_BYTES = 1 << 20

__all__ = ["KernelBuildError", "build_libraries", "build_library", "compiler_flags", "compiler_version"]


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
        mark_used(target)
        return target
    with tempfile.TemporaryDirectory(prefix="zd_build_", dir=cache_dir) as tmp:
        out = Path(tmp) / "kernels.so"
        if len(translation_units(source, usable_cpus())) == 1:
            _run_compiler(cxx, [*flags, _write(Path(tmp) / "kernels.cpp", source), "-o", str(out)])
        else:
            head = source.split(LAYER_MARK, 1)[0]
            units = UnitCache(cache_dir / "units", cache_key(head, flags, compiler_version(cxx)))
            _compile_and_link(cxx, flags, source, units, Path(tmp), out)
        if not out.exists():
            raise KernelBuildError(f"C++ compiler {cxx} wrote no library")
        # Same directory, so the rename is atomic: readers see the whole library or none.
        os.replace(out, target)
    return target


def build_libraries(sources: list[str], *, isa: str, cache_dir: Path, compiler: str | None = None) -> list[Path]:
    """build_library for each source, one compiler process per usable CPU at a time (the tuner's candidate
    libraries are small single units: built one after another they left all but one core idle)."""
    with ThreadPoolExecutor(max(1, min(len(sources), usable_cpus()))) as pool:
        return list(pool.map(lambda source: build_library(source, isa=isa, cache_dir=cache_dir, compiler=compiler),
                             sources))


def translation_units(source: str, cpus: int, unit_bytes: int | None = None) -> list[str]:
    """`source` cut at LAYER_MARK into at most `cpus` units of about equal size, each with the prelude; a
    source under two units of `unit_bytes` (default UNIT_BYTES) stays one unit."""
    count = min(cpus, len(source) // (unit_bytes or UNIT_BYTES))
    head, *layers = source.split(LAYER_MARK)
    if count < 2 or len(layers) < 2:
        return [source]
    groups: list[list[str]] = [[] for _ in range(min(count, len(layers)))]
    sizes = [0] * len(groups)
    for layer in sorted(layers, key=len, reverse=True):  # largest first onto the lightest unit
        lightest = sizes.index(min(sizes))
        groups[lightest].append(layer)
        sizes[lightest] += len(layer)
    return [LAYER_MARK.join([head, *group]) for group in groups]


def _compile_and_link(cxx: str, flags: list[str], source: str, cache: UnitCache, tmp: Path, out: Path) -> None:
    """Layers already compiled in a cached unit are linked from it; the rest are cut into units and compiled all
    at once (one compiler process per unit), kept in the cache, and linked with them into one library."""
    head, *layers = source.split(LAYER_MARK)
    reused, rest = cache.cover(layers)
    units = translation_units(LAYER_MARK.join([head, *rest]), usable_cpus()) if rest else []
    objects = [tmp / f"unit{i}.o" for i in range(len(units))]
    compile_only = [flag for flag in flags if flag != "-shared"] + ["-c"]
    commands = [[*compile_only, _write(tmp / f"unit{i}.cpp", unit), "-o", str(obj)]
                for i, (unit, obj) in enumerate(zip(units, objects))]
    with ThreadPoolExecutor(max(1, len(units))) as pool:
        list(pool.map(lambda args: _run_compiler(cxx, args), commands))
    _run_compiler(cxx, [*flags, *map(str, reused + objects), "-o", str(out)])
    for unit, obj in zip(units, objects):
        cache.store(obj, unit.split(LAYER_MARK)[1:])


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _run_compiler(cxx: str, args: list[str]) -> None:
    try:
        done = subprocess.run([cxx, *args], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KernelBuildError(f"compiling kernels took longer than {COMPILE_TIMEOUT_S}s") from None
    except OSError as exc:
        raise KernelBuildError(f"cannot run the C++ compiler {cxx!r}: {exc}") from None
    if done.returncode != 0:
        raise KernelBuildError(f"C++ compiler {cxx} failed (exit {done.returncode})", done.stderr[-20000:])
