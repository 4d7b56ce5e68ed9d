// Channels-last rows -> channel planes (kernels/pixel_conv.py): dst[k * dstride + i] = src[i * sstride + k] for
// i < n, k < K. Full 16 x 16 (AVX-512) / 8 x 8 (AVX2) blocks go through registers; a scalar loop, which g++
// does not vectorise, was a sixth of the ResNet stem's time.
#if defined(__AVX512F__)
#define ZD_TB 16
static inline void zd_transpose_block(const float* __restrict src, size_t sstride, float* __restrict dst,
                                      size_t dstride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * sstride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int j = 0; j < 2; ++j) {
      const __m512d a = _mm512_castps_pd(t[i + j]), b = _mm512_castps_pd(t[i + j + 2]);
      r[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  // r[4q + m] holds, in each 128-bit lane l, column 4l + m of rows 4q .. 4q + 3.
  for (int q = 0; q < 4; q += 2)
    for (int m = 0; m < 4; ++m) {
      t[4 * q + m] = _mm512_shuffle_f32x4(r[4 * q + m], r[4 * q + 4 + m], 0x88);       // lanes 0, 2 | 0, 2
      t[4 * q + 4 + m] = _mm512_shuffle_f32x4(r[4 * q + m], r[4 * q + 4 + m], 0xdd);   // lanes 1, 3 | 1, 3
    }
  for (int m = 0; m < 4; ++m) {
    _mm512_storeu_ps(dst + (0 + m) * dstride, _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88));
    _mm512_storeu_ps(dst + (8 + m) * dstride, _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd));
    _mm512_storeu_ps(dst + (4 + m) * dstride, _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88));
    _mm512_storeu_ps(dst + (12 + m) * dstride, _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xdd));
  }
}
#elif defined(__AVX2__)
#define ZD_TB 8
static inline void zd_transpose_block(const float* __restrict src, size_t sstride, float* __restrict dst,
                                      size_t dstride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * sstride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      r[i + 2 * j] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0x44);
      r[i + 2 * j + 1] = _mm256_shuffle_ps(t[i + j], t[i + j + 2], 0xee);
    }
  for (int m = 0; m < 4; ++m) {
    _mm256_storeu_ps(dst + m * dstride, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
    _mm256_storeu_ps(dst + (4 + m) * dstride, _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
  }
}
#else
#define ZD_TB 0
#endif

static inline void zd_transpose(const float* __restrict src, size_t sstride, int n, int K, float* __restrict dst,
                                size_t dstride) {
  int i0 = 0, k0 = 0;
#if ZD_TB
  for (; k0 + ZD_TB <= K; k0 += ZD_TB)
    for (i0 = 0; i0 + ZD_TB <= n; i0 += ZD_TB)
      zd_transpose_block(src + (size_t)i0 * sstride + k0, sstride, dst + (size_t)k0 * dstride + i0, dstride);
  for (int k = 0; k < k0; ++k)  // the positions past the last full block
    for (int i = i0; i < n; ++i) dst[(size_t)k * dstride + i] = src[(size_t)i * sstride + k];
#endif
  for (int k = k0; k < K; ++k)  // the channels past the last full block
    for (int i = 0; i < n; ++i) dst[(size_t)k * dstride + i] = src[(size_t)i * sstride + k];
}
