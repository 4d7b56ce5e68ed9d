"""Few-input-channel convs (the ResNet stem): output channels in the vector lanes, input pixels broadcast.

The flat-grid kernels of codegen.py put output positions in the lanes and broadcast weights; with 3 input
channels and a dense 7x7 kernel that means unaligned, line-crossing input loads and a phase-split pad pass. Here
(oneDNN's / MLAS's first-layer scheme) a tile is `filters` vectors of output channels x `vectors` output
positions of one row: per (channel, ky, kx) `filters` aligned weight loads (the whole weight, C*k*k*K floats,
stays in L1) and one broadcast per position, each feeding `filters` FMAs. No pad pass: tiles whose window leaves
the input read a zero-padded copy of just that window.

A row of outputs lands channels-last ([Wo][Kp]) in a per-thread buffer; `zd_<name>` transposes it to NCHW, and
`zd_<name>_pool` (kernels/stem_pool.py) max-pools straight from a ring of such rows, so the full-size map never
exists: only the pooled one is written, NCHW or in the padded layout the next compiled layers read.
"""
from __future__ import annotations

import numpy as np

from kernels.c_literals import floats as _floats
from kernels.errors import UnsupportedConv
from kernels.format import CompactConv
from kernels.spec import ConvSpec, TileConfig

MAX_IN_CHANNELS = 4


def pixel_tile_ok(spec: ConvSpec) -> str | None:
    """Why this generator cannot take the layer, or None."""
    if spec.in_channels > MAX_IN_CHANNELS:
        return f"more than {MAX_IN_CHANNELS} input channels"
    if spec.residual:
        return "fuses a residual"
    return None


def lane_weights(conv: CompactConv, lanes: int, nv: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """[groups][C][k][k][nv * lanes] weights (output channels in the lanes) and [groups * nv * lanes] bias, zero
    past K; also the group count and the padded K. Shared with pointwise_conv.py."""
    dense = conv.to_dense().numpy()  # K x C x k x k, original filter order
    K, C, k = conv.out_channels, conv.in_channels, conv.kernel_size
    per_group = nv * lanes
    groups = -(-K // per_group)
    kp = groups * per_group
    w = np.zeros((kp, C, k, k), dtype=np.float32)
    w[:K] = dense
    w = w.reshape(groups, per_group, C, k, k).transpose(0, 2, 3, 4, 1)
    bias = np.zeros(kp, dtype=np.float32)
    bias[:K] = conv.bias
    return np.ascontiguousarray(w), bias, groups, kp


def _tile_function(spec: ConvSpec, nv: int, R: int, lanes: int) -> str:
    """tile{R}<CS, RS>(x window, one group's weights, bias, out): R positions x nv channel vectors, every
    accumulator a named variable (g++ kept arrays of them in registers too, but shuffled them between columns)."""
    k, s, d = spec.kernel_size, spec.stride, spec.dilation
    acc = [[f"a{j}_{r}" for r in range(R)] for j in range(nv)]
    columns = []
    for kx in range(k):
        line = [f"const vec w{j} = vload(wk + {(kx * nv + j) * lanes});" for j in range(nv)]
        for r in range(R):
            line.append(f"b = vbcast(xr[{r * s + kx * d}]);")
            line += [f"{acc[j][r]} = vfma(w{j}, b, {acc[j][r]});" for j in range(nv)]
        columns.append("      { " + " ".join(line) + " ZDP_FENCE(); }")
    init = " ".join(f"vec {acc[j][r]} = vload(bias + {j * lanes});" for r in range(R) for j in range(nv))
    relu = [f"{acc[j][r]} = vmax({acc[j][r]}, vzero());" for r in range(R) for j in range(nv)] if spec.relu else []
    store = [f"vstore(out + {r} * KP + {j * lanes}, {acc[j][r]});" for r in range(R) for j in range(nv)]
    return f"""template <int CS, int RS>
static inline void tile{R}(const float* __restrict xw, const float* __restrict wt, const float* __restrict bias,
                         float* __restrict out) {{
  {init}
  vec b;
  for (int c = 0; c < {spec.in_channels}; ++c)
    for (int ky = 0; ky < {k}; ++ky) {{
      const float* xr = xw + c * CS + ky * RS;
      const float* wk = wt + (c * {k} + ky) * {k * nv * lanes};
{chr(10).join(columns)}
    }}
  {" ".join(relu + store)}
}}
"""


def _tile_template(spec: ConvSpec, nv: int, lanes: int, sizes) -> str:
    return f"""// One tile: R output positions (stride {spec.stride}) x {nv} vectors of output channels; xw points at the
// window's top-left input (channel stride CS, RS floats from one kernel row's inputs to the next). Accumulators start at
// the bias. A compiler-only fence after each kernel column: without it g++ shares the broadcasts of overlapping
// stride-2 windows across columns, keeps them all live and spills accumulators (one third slower).
#define ZDP_FENCE() __asm__ volatile("" ::: "memory")
""" + "".join(_tile_function(spec, nv, R, lanes) for R in sorted(set(sizes)))


def _edge_function(spec: ConvSpec, R: int, pw: int, groups: int, nv: int, lanes: int) -> str:
    """Tiles whose window leaves the input run on a zero-padded copy of the window (C x k rows of pw floats)."""
    C, H, W, k, s, p, d = (spec.in_channels, spec.height, spec.width, spec.kernel_size, spec.stride, spec.padding,
                           spec.dilation)
    return f"""static void edge_tile{R}(const float* __restrict xn, int oy, int ox0, float* __restrict out) {{
  alignas(64) float win[{C * k * pw}];
  const int iy0 = oy * {s} - {p}, ix0 = ox0 * {s} - {p};
  for (int c = 0; c < {C}; ++c)
    for (int ky = 0; ky < {k}; ++ky) {{
      const int iy = iy0 + ky * {d};
      float* row = win + (c * {k} + ky) * {pw};
      for (int j = 0; j < {pw}; ++j) {{
        const int ix = ix0 + j;
        row[j] = iy >= 0 && iy < {H} && ix >= 0 && ix < {W} ? xn[((size_t)c * {H} + iy) * {W} + ix] : 0.f;
      }}
    }}
  for (int g = 0; g < {groups}; ++g)
    tile{R}<{k * pw}, {pw}>(win, WT + g * {C * k * k * nv * lanes}, BIAS + g * {nv * lanes}, out + g * {nv * lanes});
}}
"""


def pixel_layer_source(spec: ConvSpec, conv: CompactConv, tile: TileConfig, lanes: int) -> str:
    """The layer's C++ namespace and its entries zd_<name> (NCHW out) and zd_<name>_pool (fused max-pool)."""
    why = pixel_tile_ok(spec)
    if why:
        raise UnsupportedConv(f"layer {spec.name!r}: tile {tile.label}: {why}")
    nv, R = tile.filters, tile.vectors
    C, K, H, W, k, s, p, d = (spec.in_channels, spec.out_channels, spec.height, spec.width, spec.kernel_size,
                              spec.stride, spec.padding, spec.dilation)
    Ho, Wo = spec.out_height, spec.out_width
    wts, bias, groups, kp = lane_weights(conv, lanes, nv)
    span = (k - 1) * d + 1            # input rows / columns one output reads
    pw = (R - 1) * s + span           # columns a full tile's window spans
    n_blocks = -(-Wo // R)
    rem = Wo - (n_blocks - 1) * R     # positions in the last block
    # Output rows and column blocks whose whole window is inside the input: they read x in place.
    oy_lo, oy_hi = -(-p // s), (H - span + p) // s + 1
    inside = [b for b in range(n_blocks)
              if b * R * s >= p and (b * R + (R if b < n_blocks - 1 else rem) - 1) * s - p + span <= W]
    bx_lo, bx_hi = (inside[0], inside[-1] + 1) if inside else (0, 0)
    head = (f"// layer {spec.name}: {C}->{K}, {k}x{k} on {H}x{W}, stride {s}, pad {p}, dilation {d}, relu "
            f"{int(spec.relu)}, tile {tile.label} (channels in lanes, pixels broadcast)\n"
            f"namespace zdl_{spec.name} {{\n")
    arrays = (f"alignas(64) static const float WT[] = {{{_floats(wts)}}};\n"
              f"alignas(64) static const float BIAS[] = {{{_floats(bias)}}};\n"
              f"static const int KP = {kp};\n")
    return head + arrays + _tile_template(spec, nv, lanes, (R, rem)) + f"""
""" + "".join(_edge_function(spec, size, pw, groups, nv, lanes) for size in sorted({R, rem})) + f"""
// Output row oy of image xn, channels-last into rb[Wo][KP].
static void conv_row(const float* __restrict xn, int oy, float* __restrict rb) {{
  const bool rows_in = oy >= {oy_lo} && oy < {oy_hi};
  for (int b = 0; b < {n_blocks}; ++b) {{
    const int ox0 = b * {R};
    float* out = rb + (size_t)ox0 * KP;
    if (rows_in && b >= {bx_lo} && b < {bx_hi}) {{
      const float* xw = xn + (size_t)(oy * {s} - {p}) * {W} + ox0 * {s} - {p};
      for (int g = 0; g < {groups}; ++g) {{
        const float* wg = WT + g * {C * k * k * nv * lanes};
        const float* bg = BIAS + g * {nv * lanes};
        float* og = out + g * {nv * lanes};
        if ({R} == {rem} || b < {n_blocks - 1}) tile{R}<{H * W}, {d * W}>(xw, wg, bg, og);
        else tile{rem}<{H * W}, {d * W}>(xw, wg, bg, og);
      }}
    }} else if ({R} == {rem} || b < {n_blocks - 1}) edge_tile{R}(xn, oy, ox0, out);
    else edge_tile{rem}(xn, oy, ox0, out);
  }}
}}
""" + _entries(spec, kp) + f"}}  // namespace zdl_{spec.name}\n" + _externs(spec)


def _entries(spec: ConvSpec, kp: int) -> str:
    C, K, H, W, Ho, Wo = (spec.in_channels, spec.out_channels, spec.height, spec.width, spec.out_height,
                          spec.out_width)
    return f"""
static inline void to_planes(const float* __restrict rb, int n, float* __restrict y, size_t ystride) {{
  zd_transpose(rb, KP, n, {K}, y, ystride);
}}

struct Ctx {{ const float* x; float* y; int batch, bands, pk, ps, pp, relu, out_len, out_lead, Hp, Wp; }};

static void conv_item(void* vctx, int item) {{
  const Ctx* c = (const Ctx*)vctx;
  const int n = item / {Ho}, oy = item % {Ho};
  float* rb = zd_scratch(1, (size_t){Wo} * KP);
  if (!rb) abort();
  conv_row(c->x + (size_t)n * {C * H * W}, oy, rb);
  to_planes(rb, {Wo}, c->y + (size_t)n * {K * Ho * Wo} + (size_t)oy * {Wo}, {Ho * Wo});
}}

// Pooled rows [a, b) of image n: conv rows into a ring of pk rows (row cy at slot cy % pk), each computed once.
static void pool_item(void* vctx, int item) {{
  const Ctx* c = (const Ctx*)vctx;
  const int pk = c->pk, ps = c->ps, pp = c->pp, Hp = c->Hp, Wp = c->Wp;
  const int n = item / c->bands, band = item % c->bands;
  const int a = (int)((long long)Hp * band / c->bands), b = (int)((long long)Hp * (band + 1) / c->bands);
  float* ring = zd_scratch(1, (size_t)(pk + 2) * {Wo} * KP);
  if (!ring) abort();
  float* vm = ring + (size_t)pk * {Wo} * KP;   // max over the window's rows, per conv column
  float* pr = vm + (size_t){Wo} * KP;          // one pooled row, channels-last
  const float* xn = c->x + (size_t)n * {C * H * W};
  const int ystep = c->out_len ? Wp + 2 : Wp;
  float* yn = c->y + (size_t)n * {K} * (c->out_len ? c->out_len : Hp * Wp);
  const vec floor_v = vbcast(c->relu ? 0.f : -INFINITY);  // torch pads with -inf; relu(max) = max(relu)
  int next = 0;  // first conv row not yet in the ring
  for (int py = a; py < b; ++py) {{
    const int y0 = py * ps - pp, ya = y0 < 0 ? 0 : y0, yb = y0 + pk < {Ho} ? y0 + pk : {Ho};
    for (int cy = next > ya ? next : ya; cy < yb; ++cy) conv_row(xn, cy, ring + (size_t)(cy % pk) * {Wo} * KP);
    next = yb;
    const float* rows[64];  // the window's conv rows (pk <= 64), slots resolved once per pooled row
    int nr = 0;
    for (int cy = ya; cy < yb && nr < 64; ++cy) rows[nr++] = ring + (size_t)(cy % pk) * {Wo} * KP;
    for (size_t i = 0; i < (size_t){Wo} * KP; i += ZD_LANES) {{
      vec m = floor_v;
      for (int r = 0; r < nr; ++r) m = vmax(m, vload(rows[r] + i));
      vstore(vm + i, m);
    }}
    for (int px = 0; px < Wp; ++px) {{
      const int x0 = px * ps - pp, xa = x0 < 0 ? 0 : x0, xb = x0 + pk < {Wo} ? x0 + pk : {Wo};
      for (int i = 0; i < KP; i += ZD_LANES) {{
        vec m = vload(vm + (size_t)xa * KP + i);
        for (int cx = xa + 1; cx < xb; ++cx) m = vmax(m, vload(vm + (size_t)cx * KP + i));
        vstore(pr + (size_t)px * KP + i, m);
      }}
    }}
    float* yrow = yn + (c->out_len ? c->out_lead + (size_t)(py + 1) * ystep + 1 : (size_t)py * ystep);
    to_planes(pr, Wp, yrow, c->out_len ? c->out_len : (size_t)Hp * Wp);
    if (c->out_len)  // right pad of this row, left pad of the next
      for (int k = 0; k < {K}; ++k) yrow[(size_t)k * c->out_len + Wp] = yrow[(size_t)k * c->out_len + Wp + 1] = 0.f;
  }}
  if (c->out_len)
    for (int k = 0; k < {K}; ++k) {{
      float* yk = yn + (size_t)k * c->out_len;
      const int tail = c->out_lead + (Hp + 1) * ystep + 1;
      if (a == 0) memset(yk + c->out_lead, 0, sizeof(float) * (Wp + 3));  // top row and the first left pad
      if (b == Hp) memset(yk + tail, 0, sizeof(float) * (c->out_len - tail));  // bottom row, slack: zeros
    }}
}}
"""


def _externs(spec: ConvSpec) -> str:
    Ho, Wo = spec.out_height, spec.out_width
    return f"""
extern "C" void {spec.symbol}(const float* x, const float* res, float* y, int batch, int threads) {{
  (void)res;
  if (batch <= 0 || !x || !y) return;
  zdl_{spec.name}::Ctx ctx{{x, y, batch, 0, 0, 0, 0, 0, 0, 0, 0, 0}};
  zd_parallel(threads < 1 ? 1 : threads, batch * {Ho}, zdl_{spec.name}::conv_item, &ctx);
}}
// This conv, then max_pool2d(k, s, p) (of relu when relu != 0): only the pooled map is written, NCHW or, with
// out_len > 0, in the padded layout (out_len floats per channel, the padded plane from out_lead on).
extern "C" void {spec.symbol}_pool(const float* x, float* y, int batch, int threads, int k, int s, int p,
                                   int relu, int out_len, int out_lead) {{
  if (batch <= 0 || !x || !y || k < 1 || k > 64 || s < 1 || p < 0 || 2 * p > k) return;
  if ({Ho} + 2 * p < k || {Wo} + 2 * p < k) return;
  const int Hp = ({Ho} + 2 * p - k) / s + 1, Wp = ({Wo} + 2 * p - k) / s + 1;
  if (out_len && (out_lead < 0 || out_len < out_lead + (Hp + 2) * (Wp + 2))) return;
  if (threads < 1) threads = 1;
  // Bands of pooled rows, one per thread over the batch: each band recomputes the k - s conv rows it shares with
  // the band above (one row of the stem's 112 per extra band).
  int bands = (threads + batch - 1) / batch;
  if (bands > Hp) bands = Hp;
  zdl_{spec.name}::Ctx ctx{{x, y, batch, bands, k, s, p, relu, out_len, out_lead, Hp, Wp}};
  zd_parallel(threads, batch * bands, zdl_{spec.name}::pool_item, &ctx);
}}
"""
