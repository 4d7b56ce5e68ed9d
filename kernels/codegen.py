"""Generate the C++ source for a list of layers: pure and deterministic (same inputs, same text)."""
from __future__ import annotations

from importlib import resources

import numpy as np

from kernels.blocking import BlockedOps, block_ops
from kernels.c_literals import array as _array, blob as _blob, floats as _floats, ints as _ints
from kernels.build import LAYER_MARK
from kernels.errors import UnsupportedConv
from kernels.format import CompactConv
from kernels.geometry import Geometry, geometry, padded_layout_len, same_padded
from kernels.isa import VECTOR_WIDTH, check_isa
from kernels.pixel_conv import pixel_layer_source
from kernels.pointwise_conv import is_pointwise, pointwise_layer_source
from kernels.spec import ConvSpec, TileConfig
from kernels.tiles import DIRECT_MAX_OUTPUTS


def _template(name: str) -> str:
    return resources.files("kernels").joinpath("templates", name).read_text()


def prelude(isa: str) -> str:
    return "\n".join(_template(name) for name in ("prelude_common.h", "thread_pool.h", "max_pool.h",
                                                  f"prelude_{isa}.h", "linear_head.h", "transpose.h"))


def _check_layer(spec: ConvSpec, conv: CompactConv, tile: TileConfig) -> None:
    if not isinstance(spec, ConvSpec) or not isinstance(conv, CompactConv) or not isinstance(tile, TileConfig):
        raise UnsupportedConv("each layer must be a (ConvSpec, CompactConv, TileConfig) tuple")
    if (conv.out_channels, conv.in_channels, conv.kernel_size) != (spec.out_channels, spec.in_channels,
                                                                    spec.kernel_size):
        raise UnsupportedConv(f"layer {spec.name!r}: compact weights are {conv.out_channels}x{conv.in_channels}, "
                              f"{conv.kernel_size}x{conv.kernel_size}, spec says {spec.out_channels}x"
                              f"{spec.in_channels}, {spec.kernel_size}x{spec.kernel_size}")
    if not np.all(np.isfinite(conv.bias)) or not np.all(np.isfinite(conv.values)):
        raise UnsupportedConv(f"layer {spec.name!r}: weights or bias are not finite")


def _pad_function(g: Geometry, used_taps) -> str:
    s, p, H, W = g.spec.stride, g.spec.padding, g.spec.height, g.spec.width
    hq, wq, pl, lead = g.plane_height, g.plane_width, g.plane_len, g.lead
    if s == 1:
        # Zeros up to what this layer reads, not to the end of the (larger) same-padded layout: discarded lanes
        # read the slack, and unset memory there can hold denormals (slow FMAs); ~130 floats per channel of
        # zeros nobody reads cost more than a 7x7 map.
        return f"""static void pad_channel(const float* __restrict src, float* __restrict dst) {{
  memset(dst, 0, sizeof(float) * {lead + p * wq + p});
  for (int iy = 0; iy < {H}; ++iy) {{
    float* row = dst + {lead} + (iy + {p}) * {wq};
    memcpy(row + {p}, src + iy * {W}, sizeof(float) * {W});
    memset(row + {p + W}, 0, sizeof(float) * {wq - W});  // right pad + next row's left pad
  }}
  memset(dst + {lead + (H + p) * wq}, 0, sizeof(float) * {g.read_extent - lead - (H + p) * wq});
}}
"""
    # Stride s: each of the s x s phase planes, with its in-range rows and columns as constants, so the column
    # loop is a branch-free strided copy the compiler vectorises (a per-element bounds test was 2-3x slower on
    # 56x56 and 224x224 inputs: docs/benchmarks/kernels.md, session 6). Planes no used tap reads are left unset
    # (a 1x1 stride-2 downsample, compiled as the centre tap of a 3x3, reads one of four).
    used_phases = {g.tap_phase_and_shift(int(tap))[0] for tap in used_taps}
    blocks = []
    for py in range(s):
        qy_lo = min(hq, max(0, -(-(p - py) // s)))
        qy_hi = max(qy_lo, min(hq, (H - 1 + p - py) // s + 1))
        for px in range(s):
            if py * s + px not in used_phases:
                continue
            qx_lo = min(wq, max(0, -(-(p - px) // s)))
            qx_hi = max(qx_lo, min(wq, (W - 1 + p - px) // s + 1))
            blocks.append(f"""  {{
    float* plane = dst + {(py * s + px) * pl};
    memset(plane, 0, sizeof(float) * {qy_lo * wq});
    for (int qy = {qy_lo}; qy < {qy_hi}; ++qy) {{
      float* row = plane + qy * {wq};
      const float* srow = src + ({s} * qy + {py - p}) * {W};
      for (int qx = 0; qx < {qx_lo}; ++qx) row[qx] = 0.f;
      for (int qx = {qx_lo}; qx < {qx_hi}; ++qx) row[qx] = srow[{s} * qx + {px - p}];
      for (int qx = {qx_hi}; qx < {wq}; ++qx) row[qx] = 0.f;
    }}
    memset(plane + {qy_hi * wq}, 0, sizeof(float) * {pl - qy_hi * wq});
  }}""")
    return ("static void pad_channel(const float* __restrict src, float* __restrict dst) {\n"
            + "\n".join(blocks) + "\n}\n")


def _fill_function(g: Geometry, ops: BlockedOps) -> str:
    """Copy one chunk's taps for tile t into the aligned tap buffer: the only unaligned loads left."""
    C, T, L = g.spec.in_channels, g.tile, g.lanes
    shifts = g.tap_offsets()
    body = []
    for row, tap in enumerate(ops.used_taps.tolist()):
        body += [f"vstore(tb + {row * T + v * L}, vload(src + {int(shifts[tap]) + v * L}));" for v in range(g.vectors)]
    return f"""static inline void fill(float* __restrict tb, const float* __restrict xn, int ch, int t) {{
  const int c0 = ch * {ops.chunk};
  const int cn = {C} - c0 < {ops.chunk} ? {C} - c0 : {ops.chunk};
  const float* src = xn + (size_t)c0 * {g.channel_stride} + t * {T};
  for (int cl = 0; cl < cn; ++cl, src += {g.channel_stride}, tb += {ops.used_taps.size * T}) {{
    {" ".join(body)}
  }}
}}
"""


def _piece_function(g: Geometry, ops: BlockedOps, relu: bool) -> str:
    """One (filter block, channel chunk) piece of one tile: accumulate, then spill or run the epilogue."""
    B, V, L = ops.filters, g.vectors, g.lanes
    acc = [[f"a{b}_{v}" for v in range(V)] for b in range(B)]
    flat = [a for row in acc for a in row]
    lines = [
        "static inline void piece(const float* __restrict tb, float* __restrict ps, const float* __restrict rb,"
        " float* __restrict yb, int blk, int ch, int t, bool first, bool last, int io) {",
        "  " + " ".join(f"vec {a};" for a in flat),
        "  if (first) { " + " ".join(f"{a} = vzero();" for a in flat) + " }",
        "  else { " + " ".join(f"{a} = vload(ps + {i * L});" for i, a in enumerate(flat)) + " }",
        f"  const int piece_id = blk * {ops.n_chunks} + ch;",
        "  const OFF_T* op = OPS + OPSTART[piece_id];",
        "  const float* w = WTS + WSTART[piece_id];",
        f"  const int32_t* cnt = CNT + piece_id * {(1 << B) - 1};",
    ]
    for mask in range(1, 1 << B):
        slots = [b for b in range(B) if mask >> b & 1]
        body = ["const float* p = tb + *op++;"]
        body += [f"const vec x{v} = vload(p + {v * L});" for v in range(V)]
        for i, b in enumerate(slots):
            body.append(f"const vec w{i} = vbcast(w[{i}]);")
            body += [f"{acc[b][v]} = vfma(w{i}, x{v}, {acc[b][v]});" for v in range(V)]
        body.append(f"w += {len(slots)};")
        lines.append(f"  for (int i = cnt[{mask - 1}]; i > 0; --i) {{ " + " ".join(body) + " }")
    lines.append("  if (!last) { " + " ".join(f"vstore(ps + {i * L}, {a});" for i, a in enumerate(flat))
                 + " return; }")
    hw, out_len, shift = _output_strides(g)
    relu_c = "true" if relu else "false"
    lines.append(f"  const size_t ystride = io & ZD_OUT_PADDED ? {out_len} : {hw}, "
                 f"rstride = io & ZD_RES_PADDED ? {out_len} : {hw};")
    for b in range(B):
        stores = [f"zd_store({acc[b][v]}, bias, rk, yk, DEST[t * {V} + {v}], t * {g.tile} + {v * L + shift}, "
                  f"MASK[t * {V} + {v}], io, {relu_c});" for v in range(V)]
        lines.append(f"  {{ const int k = OCH[blk * {B} + {b}]; if (k >= 0) {{ const float bias = BIAS[k]; "
                     f"float* yk = yb + (size_t)k * ystride; "
                     f"const float* rk = rb ? rb + (size_t)k * rstride : nullptr; "
                     + " ".join(stores) + " } }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# Direct tiles: all tiles of a map in one work item, tiles innermost (compute_item). AMD Zen 3 (avx2), session 8:
# direct f4v3c64d 1.10-1.24x faster than the best copying tile (f6v2c0) on 256@14 and 512@7 at both densities, where
# before it had been 0.8-1.06x by median (1 thread, interleaved); no gain on the stride-2 layer into 7x7 (0.95-1.02x).
# Not measured on AVX-512 (same code, off there).
TILES_INNER_ISAS = frozenset({"avx2"})


def _tiles_inner(spec: ConvSpec) -> bool:
    """Small 3x3 maps only: there the weights outweigh the input; on a 7x7 stem every block would sweep the whole
    input instead."""
    return spec.kernel_size == 3 and spec.out_height * spec.out_width <= DIRECT_MAX_OUTPUTS


def _output_strides(g: Geometry) -> tuple[int, int, int]:
    """Floats per output channel in NCHW and in the padded layout, and where flat index 0 sits in the latter."""
    hw = g.spec.out_height * g.spec.out_width
    if not same_padded(g.spec):
        return hw, hw, 0  # never called with padded bits: no entry takes them
    return hw, padded_layout_len(g.spec.out_height, g.spec.out_width), g.padded_shift


def _zero_padding_function(g: Geometry, filters: int) -> str:
    """Padded output: what no tile stores, the top row and first left pad, and everything after the last tile
    (the bottom padding and the slack any reader's discarded lanes may read: unset memory there can hold
    denormals, which slow the reader's FMAs tenfold). The lead stays unset: no tile reads it."""
    _, out_len, shift = _output_strides(g)
    end = g.n_tiles * g.tile + shift
    assert end <= out_len
    tail = f"if (t == {g.n_tiles - 1}) memset(yk + {end}, 0, sizeof(float) * {out_len - end});" \
        if out_len > end else ""
    return f"""static void zero_padding(float* __restrict yn, int b0, int b1, int t) {{
  if (t != 0 && t != {g.n_tiles - 1}) return;
  for (int s = b0 * {filters}; s < b1 * {filters}; ++s) {{
    const int k = OCH[s];
    if (k < 0) continue;
    float* yk = yn + (size_t)k * {out_len};
    if (t == 0) memset(yk + {g.lead}, 0, sizeof(float) * {shift - g.lead});
    {tail}
  }}
}}
"""


def _direct_offsets(g: Geometry, ops: BlockedOps) -> np.ndarray:
    """Op offsets into the padded input itself (tile.direct): local channel * channel stride + tap shift."""
    rows = ops.used_taps.size
    c_local, row = ops.offsets // (rows * g.tile), (ops.offsets // g.tile) % rows
    return c_local * g.channel_stride + g.tap_offsets()[ops.used_taps[row]]


def layer_source(spec: ConvSpec, conv: CompactConv, tile: TileConfig, isa: str) -> str:
    _check_layer(spec, conv, tile)
    if tile.pixels:
        source = pointwise_layer_source if is_pointwise(conv) else pixel_layer_source
        return source(spec, conv, tile, VECTOR_WIDTH[isa])
    if isa == "portable" and tile.filters > 4:
        raise UnsupportedConv(f"layer {spec.name!r}: the portable build takes at most 4 filters per block "
                              "(255 mask loops make the compiler crawl)")
    g = geometry(spec, tile, VECTOR_WIDTH[isa])
    if g.channel_stride * spec.in_channels >= 1 << 31:
        raise UnsupportedConv(f"layer {spec.name!r}: padded input too large for 32-bit offsets")
    ops = block_ops(conv, tile.filters, tile.channels, g.tile)
    dest, mask = g.store_table()
    C, K, B, V, L = spec.in_channels, spec.out_channels, tile.filters, tile.vectors, g.lanes
    y_size = K * spec.out_height * spec.out_width
    tap_buffer = ops.chunk * ops.used_taps.size * g.tile
    offsets = _direct_offsets(g, ops) if tile.direct else ops.offsets
    off_t = "uint16_t" if offsets.max(initial=0) < 1 << 16 else "int32_t"
    head = (f"// layer {spec.name}: {C}->{K}, {spec.kernel_size}x{spec.kernel_size} on {spec.height}x{spec.width}, stride {spec.stride}, pad {spec.padding}, "
            f"dilation {spec.dilation}, relu {int(spec.relu)}, residual {int(spec.residual)}, tile {tile.label}, "
            f"nnz {conv.nnz}\nnamespace zdl_{spec.name} {{\ntypedef {off_t} OFF_T;\n")
    arrays = (_blob("OFF_T", off_t.replace("_t", ""), "OPS", offsets)
              + _blob("float", "float32", "WTS", ops.weights) + _blob("int32_t", "int32", "CNT", ops.counts) + _array("int32_t", "OPSTART", _ints(ops.op_start))
              + _array("int32_t", "WSTART", _ints(ops.w_start)) + _array("int32_t", "OCH", _ints(ops.out_channel))
              + _array("float", "BIAS", _floats(conv.bias)) + _array("int64_t", "COST", _ints(ops.cost))
              + _array("int32_t", "DEST", _ints(dest)) + _array("uint32_t", "MASK", _ints(mask)))
    per_block = B * V * L
    per_item = g.n_tiles if tile.direct and isa in TILES_INNER_ISAS and _tiles_inner(spec) else 1
    item_tiles = g.n_tiles // per_item
    pad_channels = max(1, 16384 // (spec.height * spec.width))
    same = same_padded(spec)
    _, out_len, _ = _output_strides(g)
    entry = f"""struct Ctx {{ const float* x; const float* res; float* y; float* xp; int batch; int groups; int io; }};

static void pad_item(void* vctx, int item) {{
  const Ctx* c = (const Ctx*)vctx;
  const int lo = item * {pad_channels}, total = c->batch * {C};
  const int hi = lo + {pad_channels} < total ? lo + {pad_channels} : total;
  for (int i = lo; i < hi; ++i)
    pad_channel(c->x + (size_t)i * {spec.height * spec.width}, c->xp + (size_t)i * {g.channel_stride});
}}

// One item: filter group g of tiles [t0, t0 + {per_item}) of batch item n, all channel chunks. Direct tiles
// take every tile of the map in one item, tiles innermost, so a block's weights and offsets are read from memory
// once per call instead of once per tile (TILES_INNER_ISAS).
static void compute_item(void* vctx, int item) {{
  const Ctx* c = (const Ctx*)vctx;
  const int g = item % c->groups, nt_ = item / c->groups, n = nt_ / {item_tiles}, t0 = nt_ % {item_tiles} * {per_item};
  int b0, b1;
  zd_split(COST, {ops.n_blocks}, g, c->groups, &b0, &b1);
  {"const float* tb;" if tile.direct else f"float* tb = zd_scratch(1, {tap_buffer});"}
  float* ps = {ops.n_chunks} > 1 ? zd_scratch(2, (size_t)(b1 - b0) * {per_item * per_block}) : nullptr;
  if ({"false" if tile.direct else "!tb"} || ({ops.n_chunks} > 1 && !ps)) abort();  // out of memory for a few kilobytes: nothing sane left
  const int io = {"c->io" if same else "0"};
  const float* xn = c->xp + (size_t)n * {C * g.channel_stride};
  const float* rn = c->res ? c->res + (size_t)n * (io & ZD_RES_PADDED ? {K * out_len} : {y_size}) : nullptr;
  float* yn = c->y + (size_t)n * (io & ZD_OUT_PADDED ? {K * out_len} : {y_size});
  for (int ch = 0; ch < {ops.n_chunks}; ++ch) {{
    {f"tb = xn + (size_t)ch * {ops.chunk * g.channel_stride};" if tile.direct else "fill(tb, xn, ch, t0);"}
    for (int b = b0; b < b1; ++b)
      for (int t = t0; t < t0 + {per_item}; ++t)
        piece({f"tb + t * {g.tile}" if tile.direct else "tb"}, ps + ((size_t)(b - b0) * {per_item} + (t - t0)) * {per_block}, rn, yn, b, ch, t,
              ch == 0, ch == {ops.n_chunks} - 1, io);
  }}
  {f"if (io & ZD_OUT_PADDED) for (int t = t0; t < t0 + {per_item}; ++t) zero_padding(yn, b0, b1, t);" if same else ""}
}}

static void run(const float* x, const float* res, float* y, int batch, int threads, int io) {{
  if (batch <= 0 || !x || !y) return;
  if (threads < 1) threads = 1;
  float* xp = io & ZD_IN_PADDED ? const_cast<float*>(x) : zd_scratch(0, (size_t)batch * {C * g.channel_stride});
  if (!xp) abort();
  const int tiles = batch * {item_tiles};
  int groups = (4 * threads + tiles - 1) / tiles;
  if (groups > 2 * threads) groups = 2 * threads;
  if (groups > {ops.n_blocks}) groups = {ops.n_blocks};
  if (threads == 1 || (long long)tiles * groups > 0x3fffffff) groups = 1;
  Ctx ctx{{x, {"res" if spec.residual else "nullptr"}, y, xp, batch, groups, io}};
  if (!(io & ZD_IN_PADDED)) zd_parallel(threads, (batch * {C} + {pad_channels - 1}) / {pad_channels}, pad_item, &ctx);
  zd_parallel(threads, tiles * groups, compute_item, &ctx);
}}
}}  // namespace zdl_{spec.name}

extern "C" void {spec.symbol}(const float* x, const float* res, float* y, int batch, int threads) {{
  zdl_{spec.name}::run(x, res, y, batch, threads, 0);
}}
"""
    if same:  # the same-padded layout in and out (kernels/padded_layout.py): io = ZD_*_PADDED bits
        entry += f"""extern "C" void {spec.symbol}_io(const float* x, const float* res, float* y, int batch,
                                   int threads, int io) {{
  zdl_{spec.name}::run(x, res, y, batch, threads, io & 7);
}}
// The layout this library was generated for: the caller chains only when it computes the same length.
extern "C" int {spec.symbol}_padded_len(void) {{ return {out_len}; }}
"""
    fill = "" if tile.direct else _fill_function(g, ops)
    zero = _zero_padding_function(g, B) if same else ""
    return head + arrays + _pad_function(g, ops.used_taps) + fill + _piece_function(g, ops, spec.relu) + zero + entry


def generate_source(layers: list[tuple[ConvSpec, CompactConv, TileConfig]], isa: str) -> str:
    """One extern "C" function per layer: void zd_<name>(x, residual_or_null, y, batch, threads)."""
    check_isa(isa)
    names = [spec.name for spec, _, _ in layers]
    if len(set(names)) != len(names):
        raise UnsupportedConv(f"layer names must be unique in one library: {names}")
    head = "\n".join([f"// isa: {isa}\n", prelude(isa)])
    return LAYER_MARK.join([head] + [layer_source(spec, conv, tile, isa) for spec, conv, tile in layers])
