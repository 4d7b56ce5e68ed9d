#include <immintrin.h>
typedef __m512 vec;
#define ZD_LANES 16
static inline vec vzero() { return _mm512_setzero_ps(); }
static inline vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm512_store_ps(p, v); }
static inline vec vbcast(float w) { return _mm512_set1_ps(w); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
// Epilogue: bias (+ residual) (+ ReLU), then the kept lanes to consecutive NCHW outputs. Compress/expand
// run register to register plus a plain masked store/load: the memory forms are microcoded on Intel
// (several times slower), and this runs once per output vector. In the padded layout (io bits) the vector
// sits at `flat` as is: one plain load / store, the discarded lanes stored as zeros (they are the padding).
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, int flat, uint32_t mask,
                            int io, bool relu) {
  const __mmask16 m = (__mmask16)mask;
  const __mmask16 head = (__mmask16)((1u << __builtin_popcount(mask)) - 1u);
  vec v = _mm512_add_ps(acc, _mm512_set1_ps(bias));
  if (res) v = _mm512_add_ps(v, io & ZD_RES_PADDED
                                    ? _mm512_loadu_ps(res + flat)
                                    : _mm512_maskz_expand_ps(m, _mm512_maskz_loadu_ps(head, res + dest)));
  if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
  if (io & ZD_OUT_PADDED) _mm512_storeu_ps(y + flat, _mm512_maskz_mov_ps(m, v));
  else _mm512_mask_storeu_ps(y + dest, head, _mm512_maskz_compress_ps(m, v));
}
