#include <immintrin.h>
typedef __m256 vec;
#define ZD_LANES 8
static inline vec vzero() { return _mm256_setzero_ps(); }
static inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm256_store_ps(p, v); }
static inline vec vbcast(float w) { return _mm256_set1_ps(w); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, uint32_t mask, bool relu) {
  if (!mask) return;
  float t[8];
  _mm256_storeu_ps(t, acc);
  for (int i = 0; i < 8; ++i) {
    if (!(mask >> i & 1u)) continue;
    float v = t[i] + bias;
    if (res) v += res[dest];
    if (relu && v < 0.f) v = 0.f;
    y[dest++] = v;
  }
}
