#include <immintrin.h>
typedef __m256 vec;
#define ZD_LANES 8
static inline vec vzero() { return _mm256_setzero_ps(); }
static inline vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vec v) { _mm256_store_ps(p, v); }
static inline vec vbcast(float w) { return _mm256_set1_ps(w); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
// Epilogue: bias (+ residual) (+ ReLU), then the kept lanes to consecutive NCHW outputs, in registers: a full
// vector is one plain load / store; a partial one (row ends) is compressed with a permute from a 256-entry table
// and written with a masked store. Against the scalar per-lane loop it replaced: 56x56 layers 7-16% faster, 28x28
// 3-8%, smaller maps within noise (AMD EPYC Zen 3, session 8). In the padded layout (io bits) the vector sits at
// `flat` as is, the discarded lanes stored as zeros (they are the padding).
struct ZdPermutes {
  uint32_t compress[256], expand[256];  // 3-bit lane indices, lane i at bits 3i
  constexpr ZdPermutes() : compress(), expand() {
    for (uint32_t m = 0; m < 256; ++m) {
      uint32_t n = 0;
      for (uint32_t i = 0; i < 8; ++i)
        if (m >> i & 1u) { compress[m] |= i << (3 * n); expand[m] |= n << (3 * i); ++n; }
    }
  }
};
static constexpr ZdPermutes ZD_PERMUTES{};
static inline __m256i zd_lanes(uint32_t packed) {
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)packed), _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21)),
                          _mm256_set1_epi32(7));
}
static inline __m256i zd_head(uint32_t mask) {  // the first popcount(mask) lanes
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(__builtin_popcount(mask)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, int flat, uint32_t mask,
                            int io, bool relu) {
  if (!mask && !(io & ZD_OUT_PADDED)) return;
  vec v = _mm256_add_ps(acc, _mm256_set1_ps(bias));
  if (mask == 0xffu) {
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + (io & ZD_RES_PADDED ? flat : dest)));
    if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
    _mm256_storeu_ps(y + (io & ZD_OUT_PADDED ? flat : dest), v);
    return;
  }
  if (res) v = _mm256_add_ps(v, io & ZD_RES_PADDED
      ? _mm256_loadu_ps(res + flat)
      : _mm256_permutevar8x32_ps(_mm256_maskload_ps(res + dest, zd_head(mask)), zd_lanes(ZD_PERMUTES.expand[mask])));
  if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
  if (io & ZD_OUT_PADDED) {
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i keep = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)mask), bits), bits);
    _mm256_storeu_ps(y + flat, _mm256_and_ps(v, _mm256_castsi256_ps(keep)));
  } else {
    _mm256_maskstore_ps(y + dest, zd_head(mask), _mm256_permutevar8x32_ps(v, zd_lanes(ZD_PERMUTES.compress[mask])));
  }
}
