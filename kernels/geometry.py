"""Where every tap of a layer reads: the padded, stride-phase-split input planes and the flat output grid.

The input of each channel is padded once and split into stride x stride phase planes of width Wq, so that
output (oy, ox) of tap (dy, dx) reads plane phase(dy, dx) at flat index (oy * Wq + ox) + offset(dy, dx):
one constant offset per tap for every output, for any stride and dilation. Outputs are computed on the
flat grid of width Wq (columns ox >= Wo are discarded by the masked store).

A "same" 3x3 layer (stride 1, padding 1, dilation 1) has one padded plane of row width W + 2, placed and sized
by the map alone (padded_lead, padded_layout_len), so one layer's flat output grid, shifted by padded_shift,
IS the next such layer's padded input: kernels/padded_layout.py hands activations over in that layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.spec import ConvSpec, TileConfig


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


MAX_TILE_FLOATS = 8 * 16  # TileConfig.vectors <= 8, at most 16 lanes


def padded_lead(width: int) -> int:
    """Floats before the padded plane of a same-padded layer, so that its interior (row 1, column 1: W + 3 in)
    starts a 64-byte line: a tile's full-vector stores into it (and its centre-tap loads) are then aligned."""
    return -(width + 3) % 16


def padded_layout_len(height: int, width: int) -> int:
    """Floats per channel of the padded layout of an HxW map: lead, the (H+2)x(W+2) plane, slack for any tile's
    reads (flat grid < H(W+2) + tile, tap shifts <= 2(W+2) + 2) and writes (shift W + 3), 16-float aligned."""
    return _ceil_div(padded_lead(width) + (height + 2) * (width + 2) + MAX_TILE_FLOATS + 2, 16) * 16


def same_padded(spec: ConvSpec) -> bool:
    """Input and output share the padded layout: 3x3, stride 1, padding 1, dilation 1 (output map = input), on
    maps whose padded plane is at least half the layout's fixed slack (7x7 and up). Since runs of layers execute
    in one call (kernels/segments.py) the layout pays on 8x8 and 16x16 maps too: the pad pass it saves ran on
    the calling thread alone (random-mask ResNet-56, batch 1, 2 threads: 8-11% faster; ResNet-18 and VGG-16
    within noise, docs/benchmarks/kernels.md, session 14). On 4x4 and 2x2 maps the slack would be 4-8x the plane."""
    return (spec.kernel_size, spec.stride, spec.padding, spec.dilation) == (3, 1, 1, 1) \
        and 2 * (spec.height + 2) * (spec.width + 2) >= MAX_TILE_FLOATS + 2


@dataclass(frozen=True)
class Geometry:
    spec: ConvSpec
    lanes: int          # floats per SIMD vector
    vectors: int        # vectors per spatial tile

    @property
    def phases(self) -> int:
        return self.spec.stride ** 2

    @property
    def plane_height(self) -> int:
        return _ceil_div(self.spec.height + 2 * self.spec.padding, self.spec.stride)

    @property
    def plane_width(self) -> int:
        return _ceil_div(self.spec.width + 2 * self.spec.padding, self.spec.stride)

    @property
    def tile(self) -> int:
        return self.lanes * self.vectors

    @property
    def flat_outputs(self) -> int:
        return self.spec.out_height * self.plane_width

    @property
    def n_tiles(self) -> int:
        return _ceil_div(self.flat_outputs, self.tile)

    def tap_phase_and_shift(self, tap: int) -> tuple[int, int]:
        s, d, wq = self.spec.stride, self.spec.dilation, self.plane_width
        k = self.spec.kernel_size
        ry, rx = d * (tap // k), d * (tap % k)
        return (ry % s) * s + (rx % s), (ry // s) * wq + (rx // s)

    @property
    def read_extent(self) -> int:
        """Floats of a phase plane this layer's tiles read (from the plane's start): the plane, and past it the
        slack the last tile's discarded lanes read."""
        max_shift = max(self.tap_phase_and_shift(t)[1] for t in range(self.spec.taps))
        return self.lead + max(self.plane_height * self.plane_width, self.n_tiles * self.tile + max_shift)

    @property
    def plane_len(self) -> int:
        """Floats per phase plane: the plane plus slack for the last tile's reads, 16-float aligned."""
        need = self.read_extent
        if same_padded(self.spec):
            assert padded_layout_len(self.spec.height, self.spec.width) >= need
            return padded_layout_len(self.spec.height, self.spec.width)
        return _ceil_div(need, 16) * 16

    @property
    def channel_stride(self) -> int:
        return self.phases * self.plane_len

    @property
    def lead(self) -> int:
        """Floats before the first phase plane (padded_lead for same-padded layers, else none)."""
        return padded_lead(self.spec.width) if same_padded(self.spec) else 0

    @property
    def padded_shift(self) -> int:
        """Same-padded layers: where output flat index 0 sits in the padded layout (row 1, column 1)."""
        return self.lead + self.plane_width + 1

    def tap_offsets(self) -> np.ndarray:
        """int64 [taps]: offset of each tap from the output's flat index, inside one channel's planes."""
        out = []
        for t in range(self.spec.taps):
            phase, shift = self.tap_phase_and_shift(t)
            out.append(self.lead + phase * self.plane_len + shift)
        return np.array(out, dtype=np.int64)

    def store_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Per output vector: the NCHW index of its first kept lane and the bitmask of kept lanes.

        Kept lanes of the flat grid, in order, are consecutive NCHW outputs, so a compress-store at
        `dest` writes exactly them.
        """
        wo, ho, wq = self.spec.out_width, self.spec.out_height, self.plane_width
        n = self.n_tiles * self.vectors
        idx = np.arange(n * self.lanes, dtype=np.int64).reshape(n, self.lanes)
        row, col = idx // wq, idx % wq
        keep = (row < ho) & (col < wo)
        first = idx[:, 0]
        frow, fcol = first // wq, first % wq
        dest = np.minimum(frow, ho) * wo + np.where(frow < ho, np.minimum(fcol, wo), 0)
        mask = (keep * (1 << np.arange(self.lanes, dtype=np.int64))).sum(axis=1)
        return dest.astype(np.int64), mask.astype(np.int64)


def geometry(spec: ConvSpec, tile: TileConfig, lanes: int) -> Geometry:
    return Geometry(spec=spec, lanes=lanes, vectors=tile.vectors)
