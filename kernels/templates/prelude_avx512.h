#include <immintrin.h>
typedef __m512 vec;
#define ZD_LANES 16
static inline vec vzero() { return _mm512_setzero_ps(); }
static inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm512_store_ps(p, v); }
static inline vec vbcast(float w) { return _mm512_set1_ps(w); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
// Epilogue: bias (+ residual) (+ ReLU), then a compress-store of the kept lanes to consecutive NCHW outputs.
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, uint32_t mask, bool relu) {
  const __mmask16 m = (__mmask16)mask;
  vec v = _mm512_add_ps(acc, _mm512_set1_ps(bias));
  if (res) v = _mm512_add_ps(v, _mm512_maskz_expandloadu_ps(m, res + dest));
  if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
  _mm512_mask_compressstoreu_ps(y + dest, m, v);
}
