// Portable fallback: plain C++ the compiler may vectorise for whatever target it builds.
struct vec { float v[8]; };
#define ZD_LANES 8
static inline vec vzero() { vec r; for (int i = 0; i < 8; ++i) r.v[i] = 0.f; return r; }
static inline vec vload(const float* p) { vec r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
static inline void vstore(float* p, vec v) { for (int i = 0; i < 8; ++i) p[i] = v.v[i]; }
static inline vec vbcast(float w) { vec r; for (int i = 0; i < 8; ++i) r.v[i] = w; return r; }
static inline vec vfma(vec a, vec b, vec c) { for (int i = 0; i < 8; ++i) c.v[i] += a.v[i] * b.v[i]; return c; }
static inline vec vmax(vec a, vec b) { for (int i = 0; i < 8; ++i) a.v[i] = b.v[i] > a.v[i] ? b.v[i] : a.v[i]; return a; }
// Padded layout (io bits): lane i sits at flat + i, discarded lanes stored as zeros (they are the padding).
static inline void zd_store(vec acc, float bias, const float* res, float* y, int dest, int flat, uint32_t mask,
                            int io, bool relu) {
  for (int i = 0; i < 8; ++i) {
    if (!(mask >> i & 1u)) {
      if (io & ZD_OUT_PADDED) y[flat + i] = 0.f;
      continue;
    }
    float v = acc.v[i] + bias;
    if (res) v += io & ZD_RES_PADDED ? res[flat + i] : res[dest];
    if (relu && v < 0.f) v = 0.f;
    if (io & ZD_OUT_PADDED) y[flat + i] = v;
    else y[dest] = v;
    ++dest;
  }
}
