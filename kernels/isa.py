"""Which SIMD variant this machine can run: read from the CPU flags and confirmed with the compiler."""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

ISAS = ("avx512", "avx2", "portable")
ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mprefer-vector-width=512"],
    "avx2": ["-mavx2", "-mfma"],
    "portable": [],
}
VECTOR_WIDTH = {"avx512": 16, "avx2": 8, "portable": 8}
_CPU_FLAGS_NEEDED = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"},
    "avx2": {"avx2", "fma"},
    "portable": set(),
}
_PROBE = {
    "avx512": "#include <immintrin.h>\nint main(){__m512 a=_mm512_set1_ps(1.f);"
              "_mm512_mask_compressstoreu_ps((float*)0+0,0,a);return 0;}\n",
    "avx2": "#include <immintrin.h>\nint main(){__m256 a=_mm256_set1_ps(1.f);a=_mm256_fmadd_ps(a,a,a);"
            "return (int)_mm256_cvtss_f32(a)-3;}\n",
}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Flags of the first CPU in /proc/cpuinfo (empty when it cannot be read: then only portable runs)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def find_compiler(compiler: str | None = None) -> str | None:
    """An explicit compiler (path or name) or the first of $CXX, g++, c++, clang++ on PATH."""
    import os
    candidates = [compiler] if compiler else [os.environ.get("CXX"), "g++", "c++", "clang++"]
    for name in candidates:
        if name:
            found = shutil.which(name)
            if found:
                return found
    return None


@functools.lru_cache(maxsize=16)
def compiler_supports(isa: str, compiler: str | None = None) -> bool:
    """True when the compiler builds a tiny program with this ISA's flags and intrinsics."""
    if isa == "portable":
        return find_compiler(compiler) is not None
    cxx = find_compiler(compiler)
    if cxx is None:
        return False
    with tempfile.TemporaryDirectory(prefix="zd_isa_") as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(_PROBE[isa])
        try:
            done = subprocess.run([cxx, *ISA_FLAGS[isa], "-c", str(src), "-o", str(Path(tmp) / "probe.o")],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0


def runnable_isas(compiler: str | None = None, cpuinfo: str | None = None) -> list[str]:
    """Every variant this CPU can execute and the compiler can build, best first (portable always last)."""
    flags = cpu_flags(cpuinfo)
    found = [isa for isa in ("avx512", "avx2")
             if _CPU_FLAGS_NEEDED[isa] <= flags and compiler_supports(isa, compiler)]
    return found + ["portable"]


def detect_isa(compiler: str | None = None, cpuinfo: str | None = None) -> str:
    """"avx512" | "avx2" | "portable": the best variant both the CPU and the compiler support."""
    return runnable_isas(compiler, cpuinfo)[0]


def check_isa(isa: str) -> str:
    from kernels.errors import UnsupportedConv
    if isa not in ISAS:
        raise UnsupportedConv(f"unknown ISA {isa!r}: expected one of {', '.join(ISAS)}")
    return isa
