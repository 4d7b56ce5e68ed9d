"""What this core does today: FMA latency and issue rate, and the cost of the generated kernels' mask-loop ops.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.kernel_machine

A shared VM's FP throughput moves with its neighbours (session 9: ~2.5 ymm FMAs/ns, half of session 8's ORT rate
on the same VM type), so per-layer results of different days only compare through a calibration like this one.
Prints ns per FMA for 1-12 independent FMA chains (1 chain = latency, many = issue interval), then ns per op of a
long one-filter-block mask loop shaped like kernels/codegen.py's (f4v3: 3 vectors, 16-bit tap offsets into an
L1-resident tap buffer, one broadcast weight per slot) for 1-4 slots per op. AVX2 (also runs on AVX-512 hosts).
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from kernels.isa import ISA_FLAGS, detect_isa, find_compiler

_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef __m256 vec;
static double now() { timespec a; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a); return a.tv_sec * 1e9 + a.tv_nsec; }
template <int N> __attribute__((noinline)) double chains(long n) {
  vec r[N]; for (int j = 0; j < N; ++j) r[j] = _mm256_set1_ps(j * 0.1f);
  const vec w = _mm256_set1_ps(0.5f);
  double t = now();
  for (long i = 0; i < n; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < N; ++j) r[j] = _mm256_fmadd_ps(w, r[j], w);
  }
  t = now() - t;
  float s = 0; for (int j = 0; j < N; ++j) s += ((float*)&r[j])[0];
  if (s == 12345.f) puts("");
  return t / (n * (double)N);
}
alignas(64) static float tb[32 * 9 * 24];
static float wts[1 << 17];
static uint16_t ops[1 << 15];
template <int S> __attribute__((noinline)) void mask_loop(int n, const uint16_t* op, const float* w, vec* a) {
  vec acc[4][3]; for (int b = 0; b < 4; ++b) for (int v = 0; v < 3; ++v) acc[b][v] = a[b * 3 + v];
  for (int i = n; i > 0; --i) {
    const float* p = tb + *op++;
    const vec x0 = _mm256_loadu_ps(p), x1 = _mm256_loadu_ps(p + 8), x2 = _mm256_loadu_ps(p + 16);
#pragma GCC unroll 4
    for (int b = 0; b < S; ++b) {
      const vec wb = _mm256_set1_ps(w[b]);
      acc[b][0] = _mm256_fmadd_ps(wb, x0, acc[b][0]); acc[b][1] = _mm256_fmadd_ps(wb, x1, acc[b][1]);
      acc[b][2] = _mm256_fmadd_ps(wb, x2, acc[b][2]);
    }
    w += S;
  }
  for (int b = 0; b < 4; ++b) for (int v = 0; v < 3; ++v) a[b * 3 + v] = acc[b][v];
}
template <int S> double time_loop(vec* a) {
  double best = 1e18;
  for (int r = 0; r < 20; ++r) {
    const double t = now();
    for (int k = 0; k < 100; ++k) mask_loop<S>(1 << 15, ops, wts, a);
    const double d = now() - t;
    if (d < best) best = d;
  }
  return best / (100.0 * (1 << 15));
}
int main() {
  srand(1);
  for (int i = 0; i < (1 << 15); ++i) ops[i] = (uint16_t)((rand() % (32 * 9)) * 24);
  for (int i = 0; i < (1 << 17); ++i) wts[i] = 1e-6f;
  for (int i = 0; i < 32 * 9 * 24; ++i) tb[i] = 1e-3f;
  const long n = 20000000;
  printf("FMA chains  1: %.3f ns/FMA (latency)\n", chains<1>(n));
  printf("FMA chains  2: %.3f\nFMA chains  4: %.3f\nFMA chains  6: %.3f\n", chains<2>(n), chains<4>(n), chains<6>(n));
  printf("FMA chains  8: %.3f\nFMA chains 12: %.3f ns/FMA (issue interval)\n", chains<8>(n), chains<12>(n));
  alignas(32) vec a[12]; for (int i = 0; i < 12; ++i) a[i] = _mm256_setzero_ps();
  const double t1 = time_loop<1>(a), t2 = time_loop<2>(a), t3 = time_loop<3>(a), t4 = time_loop<4>(a);
  printf("mask loop, 1 slot: %.3f ns/op (%.2f FMA/ns)\n", t1, 3 / t1);
  printf("mask loop, 2 slots: %.3f ns/op (%.2f FMA/ns)\n", t2, 6 / t2);
  printf("mask loop, 3 slots: %.3f ns/op (%.2f FMA/ns)\n", t3, 9 / t3);
  printf("mask loop, 4 slots: %.3f ns/op (%.2f FMA/ns)\n", t4, 12 / t4);
  if (((float*)a)[0] == 12345.f) puts("");
}
"""


def main() -> None:
    isa, cxx = detect_isa(), find_compiler()
    if isa not in ("avx2", "avx512") or not cxx:
        raise SystemExit(f"needs AVX2 and a C++ compiler (this host: {isa}, compiler {cxx})")
    with tempfile.TemporaryDirectory(prefix="zd_machine_") as tmp:
        src, exe = Path(tmp) / "machine.cpp", Path(tmp) / "machine"
        src.write_text(_SOURCE)
        subprocess.run([cxx, "-O3", "-std=c++17", *ISA_FLAGS["avx2"], str(src), "-o", str(exe)],
                       check=True)
        print(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout, end="")


if __name__ == "__main__":
    main()
