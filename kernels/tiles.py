"""Candidate loop blockings for one layer, best guess first (the autotuner times them)."""
from __future__ import annotations

from kernels.isa import VECTOR_WIDTH, check_isa
from kernels.pixel_conv import pixel_tile_ok
from kernels.pointwise_conv import pointwise_tile_ok
from kernels.spec import ConvSpec, TileConfig

_REGISTERS = {"avx512": 32, "avx2": 16, "portable": 16}
# (filters, vectors, channel chunk[, only up to this many input channels]), best-first, measured on ResNet-18 layers
# (docs/benchmarks/kernel-layers.md). avx512 on the AMD EPYC workers (docs/benchmarks/kernels.md, 2026-11-22, tuned
# at 1 thread): with 64+ input channels f4v4 with chunk 16, 32 or all channels was within 1% of the fastest in 37
# of 38 ResNet-18 decisions (f8v3c0 won a 1x1 downsample), f2v8c8 and f4v4c8 never won by more than 1%; on
# ResNet-56 CIFAR (16-64 channels) f4v4c8 and f2v8c8 won 54 of 55 layers (without them: +20% summed layer time).
# Every candidate costs a compile and a timing per layer, so the chunk-8 ones are tried on small layers only.
# f6v4c0 and f4v5c32: 5-12% faster than the best f4v4 on 512@7 and 256@14 layers (same session, 1 thread).
# avx2 (16 ymm registers) on an AMD EPYC Zen 3, session 8, 1 thread, interleaved per layer (benchmarks/kernel_tile_ab,
# docs/benchmarks/kernels.md): f4v3 (12 accumulators) beat the old default f2v4c8 by 5-25% on every ResNet-18 3x3
# layer; chunk 32 was best or within 3% on 56x56/28x28/7x7, all channels (c0) on the stride-2 28x28 layer (1.08-1.20x
# over c16); f6v2c0 won 256@14 and the stride-2 layer into 7x7 (1.18x / 1.38-1.45x over f4v3c16); on ResNet-56
# layers f4v3c0/c16 were within 6% of the best except 64@8, where f2v5c8 won by 15%. f3v3, f5v2, f6v2c32, f8v1 and
# the old f2v4c8 / f4v2 never won by more than noise.
_PREFERENCES = {
    "avx512": [(4, 4, 16), (4, 4, 32), (4, 4, 0), (8, 3, 0), (6, 4, 0), (4, 5, 32), (4, 4, 8, 64), (2, 8, 8, 64)],
    "avx2": [(4, 3, 32), (4, 3, 16), (6, 2, 0), (4, 3, 0), (2, 5, 8, 64)],
    "portable": [(2, 4, 8), (4, 2, 0), (1, 6, 8), (2, 4, 0)],
}


# Direct-load tiles (TileConfig.direct), tried on stride-1 layers with output maps of at most 14x14 only: there
# one tile's tap copies feed too few blocks to pay for themselves, and larger chunks cut the per-chunk mask-loop
# exits. Session 5 (Intel Xeon, AVX-512, 1 thread, interleaved A/B against f6v4c0, two runs): f6v4c128d /
# f4v4c64d 9-23% / 4-14% faster on 512@7 and 9-13% / 2-14% on 256@14; on the stride-2 layers into 14x14 and
# 7x7 they lost 8-14%, on 28x28 and 56x56 maps up to 18% (docs/benchmarks/kernels.md). avx2 (Zen 3, session 8):
# f4v3c64d 1.00-1.06x of f6v2c0 on 256@14 by median, fastest runs 3-20% faster on 512@7 but medians 10-20% slower
# (noisy); f6v2c128d, f6v2c0d, f5v2c128d no better, f8v1c128d 0.4-0.6x. One candidate, the tuner decides.
# f4v7c64d (AMD Zen 4, session 26, 1 thread, interleaved, benchmarks.kernel_source_ab): on 256@14 1.11-1.13x
# f4v4c64d's speed and 1.05-1.11x f6v4c128d's at both densities: its 7 vectors cover 7 rows of the 16-wide
# padded 14x14 map, so two tiles compute 224 positions for 196 outputs where 4-vector tiles compute 256. Capped to
# the map it is f4v5c0d on ResNet-56's 8x8 maps (one tile of 80 positions, not two of 64): that model 2.03 -> 1.51 ms.
_DIRECT_PREFERENCES = {"avx512": [(6, 4, 128), (4, 4, 64), (4, 7, 64)], "avx2": [(4, 3, 64)], "portable": []}
DIRECT_MAX_OUTPUTS = 14 * 14
# ... and on larger maps whose whole padded input is small (CIFAR ResNets' 16 channels at 32x32, 32 at 16x16): there
# a tile's rows of every channel stay in cache. Zen 4, session 26, 1 thread, interleaved: f6v4c0d / f4v4c0d /
# f4v7c0d 1.08-1.29x f4v4c8's speed (the tuner's pick before) on 16@32x32 and 32@16x16 at both densities; ResNet-18's
# 64@56x56 (861 KB padded) and 128@28x28 (460 KB) lost with direct tiles (session 5).
DIRECT_MAX_INPUT_FLOATS = 32 * 1024
# 5x5 / 7x7 convs (the ResNet-18 stem, 3->64 7x7 stride 2, dense): every op feeds every filter of a block, so
# wide direct tiles. Session 6 (AMD EPYC, AVX-512, 1 thread, interleaved): f4v6c0d / f6v4c0d 0.89x / 0.94x of
# f6v4c0's time, f8v3c0 1.09x, f4v4c0 1.49x (docs/benchmarks/kernels.md). avx2 (Zen 3, session 8, 1 thread,
# benchmarks/kernel_stem_ab, median): f4v3c0d 4.09 ms, f2v5c0d 4.05, f3v3c0d 4.31, f4v3c0 4.41, f6v2c0d 4.91, the old
# default f4v2c0 6.42, f8v1c0d 6.54; ONNX Runtime 4.01, torch 6.80.
_LARGE_KERNEL_PREFERENCES = {"avx512": [((4, 6, 0), True), ((6, 4, 0), True)],
                             "avx2": [((4, 3, 0), True), ((2, 5, 0), True)], "portable": []}


# Pixels tiles (kernels/pixel_conv.py: output channels in the lanes, input pixels broadcast) for convs with at most 4
# input channels and at least two vectors of output channels: (channel vectors, output positions). ResNet-18 stem,
# one thread, this session's AMD EPYC (Zen 5, AVX-512), interleaved (docs/benchmarks/kernels.md, session 19):
# f4v6c0p ~0.8x f4v6c0d's time alone, ~0.7x with the pool fused; f4v5c0p and f2v8c0p no better. avx2 on the same host:
# f2v5c0p 0.97x of f4v3c0d, 0.89x with the pool fused; f4v2c0p and f3v3c0p 1.12x. Not offered portable (3x slower).
_PIXEL_PREFERENCES = {"avx512": [(4, 6)], "avx2": [(2, 5)], "portable": []}


def _pixel_tiles(spec: ConvSpec, isa: str) -> list[TileConfig]:
    lanes = VECTOR_WIDTH[isa]
    channel_vectors = -(-spec.out_channels // lanes)
    if pixel_tile_ok(spec) is not None or channel_vectors < 2:
        return []
    return [TileConfig(filters=min(nv, channel_vectors), vectors=min(r, spec.out_width), channels=0, pixels=True)
            for nv, r in _PIXEL_PREFERENCES[isa]]


# Pointwise tiles (kernels/pointwise_conv.py: a 1x1 conv as a matrix product, output channels in the lanes, input
# pixels broadcast): (channel vectors, output positions), accumulators + weights + one broadcast in registers. Offered
# first for 1x1 layers. AMD Zen 5, session 27, 2 threads, dense ResNet-50 1x1 shapes (7x7 to 56x56, stride 1 and 2),
# interleaved with the flat-grid tiles (benchmarks/kernel_pointwise.py): the faster of f4v6c0p / f3v8c0p 1.13-1.42x the
# best flat-grid tile on all eight shapes (f3v8c0p where a row is one tile: 7x7 maps, stride 2 into 7x7); the AVX2
# build on the same host, f3v4c0p / f2v5c0p, 1.02-1.34x (docs/benchmarks/kernels.md).
_POINTWISE_PREFERENCES = {"avx512": [(4, 6), (3, 8)], "avx2": [(3, 4), (2, 5)], "portable": []}


def _pointwise_tiles(spec: ConvSpec, isa: str) -> list[TileConfig]:
    if pointwise_tile_ok(spec) is not None:
        return []
    channel_vectors = -(-spec.out_channels // VECTOR_WIDTH[isa])
    tiles = [TileConfig(filters=min(nv, channel_vectors), vectors=min(r, spec.out_width), channels=0, pixels=True)
             for nv, r in _POINTWISE_PREFERENCES[isa]]
    return list(dict.fromkeys(tiles))


def _small_input(spec: ConvSpec) -> bool:
    padded = (spec.height + 2 * spec.padding) * (spec.width + 2 * spec.padding)
    return spec.in_channels * padded <= DIRECT_MAX_INPUT_FLOATS


def _fits(filters: int, vectors: int, isa: str) -> bool:
    # accumulators + one input vector + one broadcast weight: g++ takes an op's other input vectors as memory
    # operands of the FMAs when registers run out (f4v7: 28 accumulators, faster than f4v4, see above)
    return filters * vectors + 2 <= _REGISTERS[isa]


def candidate_tiles(spec: ConvSpec, isa: str, pointwise: bool = False) -> list[TileConfig]:
    """A few distinct blockings that fit the ISA's registers and the layer's size, the default first.
    pointwise: the layer is a 1x1 conv compiled as a 3x3's centre tap (pointwise_conv.is_pointwise)."""
    check_isa(isa)
    lanes = VECTOR_WIDTH[isa]
    flat = spec.out_height * (-(-(spec.width + 2 * spec.padding) // spec.stride))
    max_vectors = max(1, -(-flat // lanes))
    preferences = [(p, False) for p in _PREFERENCES[isa]]
    if spec.kernel_size > 3 and _LARGE_KERNEL_PREFERENCES[isa]:
        preferences = _LARGE_KERNEL_PREFERENCES[isa]
    elif spec.stride == 1 and (spec.out_height * spec.out_width <= DIRECT_MAX_OUTPUTS or _small_input(spec)):
        preferences += [(p, True) for p in _DIRECT_PREFERENCES[isa]]
    out: list[TileConfig] = _pixel_tiles(spec, isa)
    for (filters, vectors, chunk, *max_channels), direct in preferences:
        if max_channels and spec.in_channels > max_channels[0]:
            continue
        vectors = min(vectors, max_vectors)
        filters = min(filters, 1 << (spec.out_channels - 1).bit_length())
        if filters not in (1, 2, 4, 6, 8) or not _fits(filters, vectors, isa):
            continue
        chunk = 0 if chunk >= spec.in_channels else chunk
        tile = TileConfig(filters=filters, vectors=vectors, channels=chunk, direct=direct)
        if tile not in out:
            out.append(tile)
    if pointwise:
        out = _pointwise_tiles(spec, isa) + [t for t in out if not t.pixels]
    return out or [TileConfig(filters=1, vectors=1, channels=0)]
