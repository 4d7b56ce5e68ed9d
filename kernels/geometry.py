"""Where every tap of a layer reads: the padded, stride-phase-split input planes and the flat output grid.

The input of each channel is padded once and split into stride x stride phase planes of width Wq, so that
output (oy, ox) of tap (dy, dx) reads plane phase(dy, dx) at flat index (oy * Wq + ox) + offset(dy, dx):
one constant offset per tap for every output, for any stride and dilation. Outputs are computed on the
flat grid of width Wq (columns ox >= Wo are discarded by the masked store).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.spec import ConvSpec, TileConfig


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
    def plane_len(self) -> int:
        """Floats per phase plane: the plane plus slack for the last tile's reads, 16-float aligned."""
        max_shift = max(self.tap_phase_and_shift(t)[1] for t in range(self.spec.taps))
        need = max(self.plane_height * self.plane_width, self.n_tiles * self.tile + max_shift)
        return _ceil_div(need, 16) * 16

    @property
    def channel_stride(self) -> int:
        return self.phases * self.plane_len

    def tap_offsets(self) -> np.ndarray:
        """int64 [taps]: offset of each tap from the output's flat index, inside one channel's planes."""
        out = []
        for t in range(self.spec.taps):
            phase, shift = self.tap_phase_and_shift(t)
            out.append(phase * self.plane_len + shift)
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
