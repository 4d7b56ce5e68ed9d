// Max-pool over NCHW planes (floor mode, dilation 1), optionally of relu(x): relu commutes with max, so a
// conv -> relu -> max-pool chain pools first and clamps the 4x smaller output. torch's NCHW max_pool2d
// is ~40x slower than this on one core (ResNet stem: 6 ms vs ~0.15 ms).
#include <math.h>

struct zd_pool_ctx { const float* x; float* y; int planes, H, W, k, s, p, Ho, Wo, relu, per_item, out_len, out_lead; };

// Window max along a row of colmax (padded with `init` on both sides, so no bounds checks; n floats readable);
// k = 3, s = 2 (the ResNet stem) gets its own loop, 16 outputs per step with AVX-512 (even/odd lanes split by
// two-source permutes: the scalar loop was most of the pool's time).
static inline void zd_row_max(const float* __restrict cp, float* __restrict out, int Wo, int k, int s, int n) {
  if (k == 3 && s == 2) {
    int ox = 0;
#if defined(__AVX512F__)
    alignas(64) static const int32_t even_idx[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const __m512i even = _mm512_load_si512(even_idx), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (; ox + 16 <= Wo && 2 * ox + 34 <= n; ox += 16) {
      const float* c = cp + 2 * ox;  // outputs ox..ox+15 read c[0..32]
      const __m512 a0 = _mm512_loadu_ps(c), a1 = _mm512_loadu_ps(c + 16);
      const __m512 b0 = _mm512_loadu_ps(c + 2), b1 = _mm512_loadu_ps(c + 18);
      const __m512 m = _mm512_max_ps(_mm512_permutex2var_ps(a0, even, a1), _mm512_permutex2var_ps(a0, odd, a1));
      _mm512_storeu_ps(out + ox, _mm512_max_ps(m, _mm512_permutex2var_ps(b0, even, b1)));
    }
#endif
    for (; ox < Wo; ++ox) {
      const float a = cp[2 * ox], b = cp[2 * ox + 1], c = cp[2 * ox + 2];
      const float m = a > b ? a : b;
      out[ox] = c > m ? c : m;
    }
    return;
  }
  for (int ox = 0; ox < Wo; ++ox) {
    const float* w = cp + ox * s;
    float m = w[0];
    for (int j = 1; j < k; ++j) m = w[j] > m ? w[j] : m;
    out[ox] = m;
  }
}

static void zd_max_pool_item(void* vctx, int item) {
  const zd_pool_ctx* c = (const zd_pool_ctx*)vctx;
  // Fields in locals: the stores through cm may alias the context (no strict aliasing in these builds), which
  // kept the compiler from vectorizing the column loops (0.45 ms for the ResNet-18 stem pool).
  const int H = c->H, W = c->W, k = c->k, s = c->s, p = c->p, Ho = c->Ho, Wo = c->Wo, relu = c->relu;
  const int Wp = W + 2 * p + k;
  float* colmax = zd_scratch(1, (size_t)Wp);  // per calling thread: max over the window's rows, padded
  if (!colmax) abort();
  const float init = relu ? 0.f : -INFINITY;  // torch pads with -inf
  for (int ix = 0; ix < Wp; ++ix) colmax[ix] = init;
  float* __restrict cm = colmax + p;
  const int lo = item * c->per_item, hi = lo + c->per_item < c->planes ? lo + c->per_item : c->planes;
  for (int plane = lo; plane < hi; ++plane) {
    const float* xp = c->x + (size_t)plane * H * W;
    // out_len > 0: the padded layout of the next layer's input (kernels/padded_layout.py): out_lead floats, then
    // a plane of rows of Wo + 2 with the outputs from row 1, column 1, zeros around them.
    const int ystep = c->out_len ? Wo + 2 : Wo;
    float* yp = c->y + (size_t)plane * (c->out_len ? c->out_len : Ho * Wo);
    if (c->out_len) {
      // The lead is never read; the slack after the plane is, by discarded lanes: zeros, not denormals.
      const int tail = c->out_lead + (Ho + 1) * ystep + 1;
      memset(yp + c->out_lead, 0, sizeof(float) * (Wo + 3));
      memset(yp + tail, 0, sizeof(float) * (c->out_len - tail));
      yp += c->out_lead + Wo + 3;
    }
    for (int oy = 0; oy < Ho; ++oy) {
      const int y0 = oy * s - p;
      const int ya = y0 < 0 ? 0 : y0, yb = y0 + k < H ? y0 + k : H;
      const float* __restrict r0 = xp + (size_t)ya * W;
      if (relu) for (int ix = 0; ix < W; ++ix) cm[ix] = r0[ix] > 0.f ? r0[ix] : 0.f;
      else memcpy(cm, r0, sizeof(float) * W);
      for (int iy = ya + 1; iy < yb; ++iy) {
        const float* __restrict row = xp + (size_t)iy * W;
        for (int ix = 0; ix < W; ++ix) cm[ix] = row[ix] > cm[ix] ? row[ix] : cm[ix];
      }
      zd_row_max(colmax, yp + (size_t)oy * ystep, Wo, k, s, Wp);
      if (c->out_len) yp[(size_t)oy * ystep + Wo] = yp[(size_t)oy * ystep + Wo + 1] = 0.f;  // right pad, next left pad
    }
  }
}

// y[n, c, Ho, Wo] = max over each k x k window of x (relu'd when relu != 0); planes = n * c. out_len > 0: y in
// the padded layout instead: out_len floats per plane, the (Ho + 2) x (Wo + 2) plane from out_lead on.
// weak: a library built from several translation units carries this prelude in each (kernels/build.py).
extern "C" __attribute__((weak)) void zd_max_pool2d_io(const float* x, float* y, int planes, int H, int W, int k,
                                                       int s, int p, int relu, int threads, int out_len,
                                                       int out_lead) {
  if (!x || !y || planes <= 0 || k < 1 || s < 1 || p < 0 || 2 * p > k || H + 2 * p < k || W + 2 * p < k) return;
  if (threads < 1) threads = 1;
  zd_pool_ctx ctx{x, y, planes, H, W, k, s, p, (H + 2 * p - k) / s + 1, (W + 2 * p - k) / s + 1, relu, 0, out_len,
                  out_lead};
  if (out_len && (out_lead < 0 || out_len < out_lead + (ctx.Ho + 2) * (ctx.Wo + 2))) return;
  ctx.per_item = 1 + 16384 / (H * W + 1);
  zd_parallel(threads, (planes + ctx.per_item - 1) / ctx.per_item, zd_max_pool_item, &ctx);
}

extern "C" __attribute__((weak)) void zd_max_pool2d(const float* x, float* y, int planes, int H, int W, int k, int s, int p, int relu,
                              int threads) {
  zd_max_pool2d_io(x, y, planes, H, W, k, s, p, relu, threads, 0, 0);
}
