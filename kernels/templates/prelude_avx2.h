#include <immintrin.h>
typedef __m256 vec;
#define ZD_LANES 8
static inline vec vzero() { return _mm256_setzero_ps(); }
static inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm256_store_ps(p, v); }
static inline vec vbcast(float w) { return _mm256_set1_ps(w); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
// Padded layout (io bits): lane i sits at flat + i, discarded lanes stored as zeros (they are the padding).
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, int flat, uint32_t mask,
                            int io, bool relu) {
  if (!mask && !(io & ZD_OUT_PADDED)) return;
  float t[8];
  _mm256_storeu_ps(t, acc);
  for (int i = 0; i < 8; ++i) {
    if (!(mask >> i & 1u)) {
      if (io & ZD_OUT_PADDED) y[flat + i] = 0.f;
      continue;
    }
    float v = t[i] + bias;
    if (res) v += io & ZD_RES_PADDED ? res[flat + i] : res[dest];
    if (relu && v < 0.f) v = 0.f;
    if (io & ZD_OUT_PADDED) y[flat + i] = v;
    else y[dest] = v;
    ++dest;
  }
}
