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

// A run of compiled layers in one call from Python (kernels/segments.py): each step names its layer's entry and
// where its input, residual and output live, as slot base + offset per batch item (floats). Saves the ~7 us of
// Python and torch.empty per layer that made small CIFAR models call-bound. Weak: one copy per translation unit.
struct zd_step {
  const void* fn;  // zd_<layer> (io < 0) or zd_<layer>_io
  int64_t in_off, res_off, out_off;
  int32_t in_slot, res_slot, out_slot, io;  // res_slot < 0: no residual
};
typedef void (*zd_layer_fn)(const float*, const float*, float*, int, int);
typedef void (*zd_layer_io_fn)(const float*, const float*, float*, int, int, int);

extern "C" __attribute__((weak)) void zd_run_steps(const zd_step* steps, int n_steps, float* const* slots, int batch, int threads) {
  for (int i = 0; i < n_steps; ++i) {
    const zd_step& s = steps[i];
    const float* x = slots[s.in_slot] + s.in_off * batch;
    const float* r = s.res_slot < 0 ? nullptr : slots[s.res_slot] + s.res_off * batch;
    float* y = slots[s.out_slot] + s.out_off * batch;
    if (s.io < 0) ((zd_layer_fn)s.fn)(x, r, y, batch, threads);
    else ((zd_layer_io_fn)s.fn)(x, r, y, batch, threads, s.io);
  }
}
