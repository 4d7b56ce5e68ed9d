// zerodata generated sparse convolution kernels: plain C ABI, no torch headers.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "zerodata kernels store their constants little-endian"
#endif

// Layout bits of one layer call (kernels/padded_layout.py): which of input, residual and output are in the padded
// layout of a same-padded layer (row width W + 2, interior at W + 3) instead of NCHW.
enum { ZD_IN_PADDED = 1, ZD_RES_PADDED = 2, ZD_OUT_PADDED = 4 };

// Scratch buffers per calling thread (slot 0: padded input, 1: tap buffer, 2: partial sums), grown on
// demand and shared by every layer in this library. 64-byte aligned.
static float* zd_scratch(int slot, size_t n) {
  static thread_local float* buf[3] = {nullptr, nullptr, nullptr};
  static thread_local size_t cap[3] = {0, 0, 0};
  if (n == 0) n = 1;
  if (n > cap[slot]) {
    free(buf[slot]);
    size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    buf[slot] = (float*)aligned_alloc(64, bytes);
    cap[slot] = buf[slot] ? n : 0;
  }
  return buf[slot];
}

// Contiguous block range [*lo, *hi) for thread tid so every thread gets about the same share of the cost.
static int zd_first_at(const int64_t* prefix, int n, int64_t threshold) {
  int i = 0;
  while (i < n && prefix[i] < threshold) ++i;
  return i;
}
static void zd_split(const int64_t* prefix, int n, int tid, int nt, int* lo, int* hi) {
  const int64_t total = prefix[n];
  *lo = tid == 0 ? 0 : zd_first_at(prefix, n, total * tid / nt);
  *hi = tid == nt - 1 ? n : zd_first_at(prefix, n, total * (tid + 1) / nt);
}
