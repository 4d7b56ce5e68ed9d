"""Pointwise (1x1) convs: output channels in the vector lanes, input pixels broadcast, one output row at a time.

The flat-grid kernels of codegen.py run a 1x1 conv as the centre tap of a 3x3: positions in the lanes, one
broadcast weight per FMA, lanes wasted past each row on 7x7 and 14x14 maps. A dense 1x1 conv is a matrix
product, so here (ONNX Runtime's and oneDNN's scheme) a tile is `filters` vectors of output channels x `vectors`
output positions of one row: per input channel `filters` aligned weight loads and one broadcast per position, each
feeding `filters` FMAs. A work item is one group of output channels over a band of rows, so the group's weights
stay in cache from row to row. Each row lands channels-last in a per-thread buffer and goes to NCHW (or the padded
layout, kernels/padded_layout.py) by register transposes (templates/transpose.h); residual and ReLU follow there.

Pruned 1x1 weights (unstructured or 2:4) run as dense here: the tuner keeps the flat-grid kernel where it wins.
"""
from __future__ import annotations

import numpy as np

from kernels.c_literals import blob, floats
from kernels.errors import UnsupportedConv
from kernels.format import CompactConv
from kernels.geometry import padded_layout_len, padded_lead, same_padded
from kernels.pixel_conv import lane_weights
from kernels.spec import ConvSpec, TileConfig

CENTRE_TAP = 1 << 4  # the pattern mask of a 1x1 conv compiled as a 3x3 (graph.py pads it by one)


def is_pointwise(conv: CompactConv) -> bool:
    """Every kept kernel is the centre tap of a 3x3: a 1x1 conv as the graph hands it to the generator."""
    return conv.kernel_size == 3 and all(int(m) == CENTRE_TAP for m in conv.patterns)


def pointwise_tile_ok(spec: ConvSpec) -> str | None:
    """Why this generator cannot take the layer's geometry, or None (the weights are checked by is_pointwise)."""
    if (spec.kernel_size, spec.padding, spec.dilation) != (3, 1, 1):
        return "not a 1x1 conv compiled as the centre tap of a 3x3 (kernel 3, padding 1, dilation 1)"
    return None


def _tile_function(spec: ConvSpec, nv: int, R: int, lanes: int, relu_here: bool) -> str:
    """tile{R}(x at the first position, channel stride, group weights, group bias, row buffer at the first position)."""
    s = spec.stride
    acc = [[f"a{j}_{r}" for r in range(R)] for j in range(nv)]
    init = " ".join(f"vec {acc[j][r]} = vload(bg + {j * lanes});" for r in range(R) for j in range(nv))
    body = [f"const vec w{j} = vload(wg + {j * lanes});" for j in range(nv)]
    for r in range(R):
        body.append(f"b = vbcast(x[{r * s}]);")
        body += [f"{acc[j][r]} = vfma(w{j}, b, {acc[j][r]});" for j in range(nv)]
    relu = [f"{acc[j][r]} = vmax({acc[j][r]}, vzero());" for r in range(R) for j in range(nv)] if relu_here else []
    store = [f"vstore(out + {r * nv * lanes + j * lanes}, {acc[j][r]});" for r in range(R) for j in range(nv)]
    return f"""static inline void tile{R}(const float* __restrict x, size_t cs, const float* __restrict wg,
                         const float* __restrict bg, float* __restrict out) {{
  {init}
  vec b;
  for (int c = 0; c < {spec.in_channels}; ++c, x += cs, wg += NVL) {{
    {" ".join(body)}
  }}
  {" ".join(relu + store)}
}}
"""


def pointwise_layer_source(spec: ConvSpec, conv: CompactConv, tile: TileConfig, lanes: int) -> str:
    """The layer's C++ namespace and its entry zd_<name> (NCHW), plus zd_<name>_io / _padded_len when the
    layer is same-padded (stride 1): then input, residual and output may each be in the padded layout."""
    why = pointwise_tile_ok(spec) or (None if is_pointwise(conv) else "weights use taps other than the centre")
    if why:
        raise UnsupportedConv(f"layer {spec.name!r}: tile {tile.label}: {why}")
    nv, R = tile.filters, tile.vectors
    C, K, H, W, s = spec.in_channels, spec.out_channels, spec.height, spec.width, spec.stride
    Ho, Wo = spec.out_height, spec.out_width
    R = min(R, Wo)
    n_blocks, nvl = -(-Wo // R), nv * lanes
    rem = Wo - (n_blocks - 1) * R
    wts, bias, groups, _ = lane_weights(conv, lanes, nv)
    wts = np.ascontiguousarray(wts[:, :, 1, 1])  # [groups][C][nv * lanes]: the centre tap
    padded = same_padded(spec)
    # a same-padded layer's input and output share the layout (lead, plane, slack): one length, one lead
    plane_len, lead = (padded_layout_len(H, W), padded_lead(W)) if padded else (0, 0)
    relu_here = spec.relu and not spec.residual  # with a residual, ReLU follows the add
    blocks = "\n".join(
        f"    tile{R if b < n_blocks - 1 else rem}(xr + {b * R * s}, xcs, wg, bg, rb + {b * R * nvl});"
        for b in range(n_blocks))
    epilogue = f"""
    for (int k = 0; k < kn; ++k) {{  // residual, then ReLU, on the row just written
      float* yk = yr + (size_t)k * ycs;
      const float* rk = rr + (size_t)k * rcs;
      for (int i = 0; i < {Wo}; ++i) {{ const float v = yk[i] + rk[i]; yk[i] = {"v > 0.f ? v : 0.f" if spec.relu else "v"}; }}
    }}""" if spec.residual else ""
    return f"""// layer {spec.name}: {C}->{K}, 1x1 (the centre tap of a 3x3) on {H}x{W}, stride {s}, relu {int(spec.relu)}, residual {int(spec.residual)}, tile {tile.label} (channels in lanes)
namespace zdl_{spec.name} {{
{blob("float", "float32", "WT", wts)}alignas(64) static const float BIAS[] = {{{floats(bias)}}};
static const int NVL = {nvl};
{"".join(_tile_function(spec, nv, size, lanes, relu_here) for size in sorted({R, rem}))}
struct Ctx {{ const float* x; const float* res; float* y; int batch, bands, io; }};

// Item: output channel group g of batch item n over a band of rows, so the group's weights stay in cache.
static void item(void* vctx, int it) {{
  const Ctx* c = (const Ctx*)vctx;
  const int g = it % {groups}, nb = it / {groups}, n = nb / c->bands, band = nb % c->bands;
  const int y0 = (int)((long long){Ho} * band / c->bands), y1 = (int)((long long){Ho} * (band + 1) / c->bands);
  const int io = c->io, k0 = g * NVL, kn = {K} - k0 < NVL ? {K} - k0 : NVL;
  const bool in_p = io & ZD_IN_PADDED, out_p = io & ZD_OUT_PADDED, res_p = io & ZD_RES_PADDED;
  const size_t xcs = in_p ? {plane_len} : {H * W}, ycs = out_p ? {plane_len} : {Ho * Wo}, rcs = res_p ? {plane_len} : {Ho * Wo};
  const float* wg = WT + (size_t)g * {C} * NVL;
  const float* bg = BIAS + k0;
  float* rb = zd_scratch(1, {Wo} * NVL);
  if (!rb) abort();  // out of memory for a few kilobytes: nothing sane left
  for (int oy = y0; oy < y1; ++oy) {{
    const float* xr = c->x + (size_t)n * {C} * xcs + (in_p ? {lead} + (size_t)(oy * {s} + 1) * {W + 2} + 1 : (size_t)oy * {s * W});
{blocks}
    const size_t yo = out_p ? {lead} + (size_t)(oy + 1) * {Wo + 2} + 1 : (size_t)oy * {Wo};
    float* yr = c->y + ((size_t)n * {K} + k0) * ycs + yo;
    const float* rr = c->res ? c->res + ((size_t)n * {K} + k0) * rcs + (res_p ? {lead} + (size_t)(oy + 1) * {Wo + 2} + 1 : (size_t)oy * {Wo}) : nullptr;
    (void)rr;
    zd_transpose(rb, NVL, {Wo}, kn, yr, ycs);{epilogue}
    if (out_p)  // right pad of this row, left pad of the next
      for (int k = 0; k < kn; ++k) yr[(size_t)k * ycs + {Wo}] = yr[(size_t)k * ycs + {Wo + 1}] = 0.f;
  }}
  if (out_p)
    for (int k = 0; k < kn; ++k) {{
      float* yk = c->y + ((size_t)n * {K} + k0 + k) * ycs;
      if (y0 == 0) memset(yk + {lead}, 0, sizeof(float) * {Wo + 3});  // top row and the first left pad
      if (y1 == {Ho}) memset(yk + {lead + (Ho + 1) * (Wo + 2) + 1}, 0, sizeof(float) * {max(plane_len - (lead + (Ho + 1) * (Wo + 2) + 1), 0)});  // bottom row, slack
    }}
}}

static void run(const float* x, const float* res, float* y, int batch, int threads, int io) {{
  if (batch <= 0 || !x || !y) return;
  if (threads < 1) threads = 1;
  int bands = (4 * threads + batch * {groups} - 1) / (batch * {groups});
  if (bands > {Ho}) bands = {Ho};
  if (threads == 1) bands = 1;
  Ctx ctx{{x, {"res" if spec.residual else "nullptr"}, y, batch, bands, io}};
  zd_parallel(threads, batch * bands * {groups}, item, &ctx);
}}
}}  // namespace zdl_{spec.name}

extern "C" void {spec.symbol}(const float* x, const float* res, float* y, int batch, int threads) {{
  zdl_{spec.name}::run(x, res, y, batch, threads, 0);
}}
""" + (f"""extern "C" void {spec.symbol}_io(const float* x, const float* res, float* y, int batch, int threads, int io) {{
  zdl_{spec.name}::run(x, res, y, batch, threads, io & 7);
}}
extern "C" int {spec.symbol}_padded_len(void) {{ return {plane_len}; }}
""" if padded else "")
