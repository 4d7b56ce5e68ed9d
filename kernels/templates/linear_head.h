// The classifier head, global average pool -> flatten -> linear, in one call (kernels/head_op.py). Run in torch
// right after the library's long call for the 3x3 layers, ResNet-18's head took 0.3-0.4 ms, ~3x what it takes
// once torch's threads are awake; here it runs on the same threads the layers just used. The cost is reading the
// (out, in) row-major weight once (2 MB for ResNet-18's 1000 x 512), so the threads split the output rows.
// Included after prelude_<isa>.h: it uses vec / vload / vfma.

static const int ZD_HEAD_AHEAD = 8;  // rows
struct zd_head_ctx { const float* x; const float* w; const float* b; float* y; float* pooled;
                     int batch, channels, hw, out, per_item; };

static inline float zd_hsum(vec v) {
  alignas(64) float t[ZD_LANES];
  vstore(t, v);
  float s = 0.f;
  for (int i = 0; i < ZD_LANES; ++i) s += t[i];
  return s;
}

// pooled[plane] = mean of x's plane (hw floats); vector adds (as fma by 1: exact), since a float sum is never
// vectorised by the compiler without -ffast-math, and a scalar chain of 49 adds per plane was the slow part.
static void zd_head_pool_item(void* vctx, int item) {
  const zd_head_ctx* c = (const zd_head_ctx*)vctx;
  const int hw = c->hw, planes = c->batch * c->channels;
  const int lo = item * c->per_item, hi = lo + c->per_item < planes ? lo + c->per_item : planes;
  const vec one = vbcast(1.f);
  const float scale = 1.f / (float)hw;
  for (int plane = lo; plane < hi; ++plane) {
    const float* xp = c->x + (size_t)plane * hw;
    vec acc = vzero();
    int s = 0;
    for (; s + ZD_LANES <= hw; s += ZD_LANES) acc = vfma(vload(xp + s), one, acc);
    float sum = zd_hsum(acc);
    for (; s < hw; ++s) sum += xp[s];
    c->pooled[plane] = sum * scale;
  }
}

// y[n, o] for the item's block of per_item output rows and every batch item: four rows at a time share each load
// of the pooled input, and the block's rows (per_item x channels floats, ~32 KB) stay in L1 across the batch.
static void zd_head_rows_item(void* vctx, int item) {
  const zd_head_ctx* c = (const zd_head_ctx*)vctx;
  const int C = c->channels, out = c->out;
  const int lo = item * c->per_item, hi = lo + c->per_item < out ? lo + c->per_item : out;
  for (int n = 0; n < c->batch; ++n) {
    const float* p = c->pooled + (size_t)n * C;
    float* yn = c->y + (size_t)n * out;
    int o = lo;
    for (; o + 4 <= hi; o += 4) {
      const float* w0 = c->w + (size_t)o * C;
      const float *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
      vec a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
      int k = 0;
      // The weight streams from L3 or memory: the rows 8 on (this item's or the next, which this thread runs next)
      // are fetched meanwhile (ResNet-18's head, cache flushed: 0.15 -> 0.11 ms on 2 threads, 0.21 -> 0.19 on 1).
      const float* ahead = o + ZD_HEAD_AHEAD + 4 <= out ? w0 + (size_t)ZD_HEAD_AHEAD * C : nullptr;
      for (; k + ZD_LANES <= C; k += ZD_LANES) {
        if (ahead) {
          __builtin_prefetch(ahead + k); __builtin_prefetch(ahead + C + k);
          __builtin_prefetch(ahead + 2 * C + k); __builtin_prefetch(ahead + 3 * C + k);
        }
        const vec v = vload(p + k);
        a0 = vfma(vload(w0 + k), v, a0);
        a1 = vfma(vload(w1 + k), v, a1);
        a2 = vfma(vload(w2 + k), v, a2);
        a3 = vfma(vload(w3 + k), v, a3);
      }
      float s0 = zd_hsum(a0), s1 = zd_hsum(a1), s2 = zd_hsum(a2), s3 = zd_hsum(a3);
      for (; k < C; ++k) {
        s0 += w0[k] * p[k]; s1 += w1[k] * p[k]; s2 += w2[k] * p[k]; s3 += w3[k] * p[k];
      }
      yn[o] = s0; yn[o + 1] = s1; yn[o + 2] = s2; yn[o + 3] = s3;
    }
    for (; o < hi; ++o) {
      const float* wr = c->w + (size_t)o * C;
      vec a = vzero();
      int k = 0;
      for (; k + ZD_LANES <= C; k += ZD_LANES) a = vfma(vload(wr + k), vload(p + k), a);
      float s = zd_hsum(a);
      for (; k < C; ++k) s += wr[k] * p[k];
      yn[o] = s;
    }
    if (c->b)
      for (o = lo; o < hi; ++o) yn[o] += c->b[o];
  }
}

// y[n, o] = b[o] + sum_c w[o, c] * mean(x[n, c, :]) for x (batch, channels, hw) and w (out, channels) row-major,
// all contiguous float32; b may be null. hw = 1 is a plain linear layer on x (batch, channels).
// weak: a library built from several translation units carries this prelude in each (kernels/build.py).
extern "C" __attribute__((weak)) void zd_classifier_head(const float* x, const float* w, const float* b, float* y,
                                                         int batch, int channels, int hw, int out, int threads) {
  if (!x || !w || !y || batch <= 0 || channels <= 0 || hw <= 0 || out <= 0) return;
  if (threads < 1) threads = 1;
  zd_head_ctx ctx{x, w, b, y, (float*)x, batch, channels, hw, out, 0};
  if (hw > 1) {
    // The caller's scratch slot 2 (a layer's partial sums; no layer runs during this call), read by every thread.
    ctx.pooled = zd_scratch(2, (size_t)batch * channels);
    if (!ctx.pooled) abort();
    const int planes = batch * channels;
    ctx.per_item = 1 + 16384 / (hw + 1);
    zd_parallel(threads, (planes + ctx.per_item - 1) / ctx.per_item, zd_head_pool_item, &ctx);
  }
  ctx.per_item = 4 * (1 + 2048 / channels);  // rows per item: ~32 KB of weights, a multiple of 4
  zd_parallel(threads, (out + ctx.per_item - 1) / ctx.per_item, zd_head_rows_item, &ctx);
}
