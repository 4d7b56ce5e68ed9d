"""What one generated layer computes (ConvSpec) and how its loops are blocked (TileConfig)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from kernels.errors import UnsupportedConv

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")
MAX_DIM = 1 << 14
KERNEL_SIZES = (3, 5, 7)  # k x k windows the generator compiles (a 1x1 conv runs as a 3x3)


@dataclass(frozen=True)
class ConvSpec:
    """A k x k conv (3x3 unless kernel_size says 5 or 7), groups=1, NCHW float32.
    y = conv(x) + bias (+ residual), then ReLU if relu."""
    name: str
    in_channels: int
    out_channels: int
    height: int          # input spatial size
    width: int
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    relu: bool = False
    residual: bool = False  # the residual tensor has the output's shape
    kernel_size: int = 3

    def __post_init__(self):
        if not isinstance(self.name, str) or not _C_IDENTIFIER.match(self.name):
            raise UnsupportedConv(f"layer name {self.name!r} must be a C identifier (letters, digits, _)")
        for field in ("in_channels", "out_channels", "height", "width", "stride", "dilation"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
                raise UnsupportedConv(f"layer {self.name!r}: {field}={value!r} must be an int in 1..{MAX_DIM}")
        if self.kernel_size not in KERNEL_SIZES or isinstance(self.kernel_size, bool):
            raise UnsupportedConv(f"layer {self.name!r}: kernel_size={self.kernel_size!r} must be one of "
                                  f"{KERNEL_SIZES}")
        if not isinstance(self.padding, int) or isinstance(self.padding, bool) or not 0 <= self.padding <= 16:
            raise UnsupportedConv(f"layer {self.name!r}: padding={self.padding!r} must be an int in 0..16")
        if self.out_height < 1 or self.out_width < 1:
            raise UnsupportedConv(f"layer {self.name!r}: a {self.height}x{self.width} input gives an empty output")
        if self.in_channels * self.height * self.width > 1 << 27:
            raise UnsupportedConv(f"layer {self.name!r}: input too large for 32-bit offsets")

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding - (self.kernel_size - 1) * self.dilation - 1) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding - (self.kernel_size - 1) * self.dilation - 1) // self.stride + 1

    @property
    def symbol(self) -> str:
        """The extern "C" function the generated source exports for this layer."""
        return f"zd_{self.name}"

    def dense_flops(self, batch: int = 1) -> int:
        return 2 * batch * self.out_channels * self.in_channels * self.taps * self.out_height * self.out_width

    @property
    def taps(self) -> int:
        return self.kernel_size ** 2


@dataclass(frozen=True)
class TileConfig:
    """Loop blocking of one generated layer.

    filters: output channels per register block (one accumulator row each);
    vectors: SIMD vectors of the flat output grid per spatial tile (accumulator columns);
    channels: input channels per chunk whose aligned tap copies stay in L1 (0 = all channels at once);
    direct: read the padded input with unaligned loads instead of copying each tile's taps first (faster on
    small maps, where a tile's tap copies are used by few blocks, and on small inputs that stay in cache:
    docs/benchmarks/kernels.md, sessions 5 and 26).
    pixels: output channels in the lanes, input pixels broadcast (kernels/pixel_conv.py, convs with few input
    channels; kernels/pointwise_conv.py, 1x1 convs); then `filters` counts vectors of output channels and `vectors`
    output positions per tile.
    """
    filters: int = 4
    vectors: int = 4
    channels: int = 16
    direct: bool = False
    pixels: bool = False

    def __post_init__(self):
        if self.filters not in (1, 2, 3, 4, 5, 6, 8):
            raise UnsupportedConv(f"TileConfig.filters={self.filters!r} must be one of 1, 2, 3, 4, 5, 6, 8")
        if not isinstance(self.vectors, int) or not 1 <= self.vectors <= 8:
            raise UnsupportedConv(f"TileConfig.vectors={self.vectors!r} must be an int in 1..8")
        if not isinstance(self.channels, int) or not 0 <= self.channels <= 1 << 16:
            raise UnsupportedConv(f"TileConfig.channels={self.channels!r} must be an int in 0..65536")
        if not isinstance(self.direct, bool):
            raise UnsupportedConv(f"TileConfig.direct={self.direct!r} must be a bool")
        if not isinstance(self.pixels, bool) or (self.pixels and (self.direct or self.channels)):
            raise UnsupportedConv(f"TileConfig.pixels={self.pixels!r} must be a bool, and a pixels tile takes "
                                  "neither direct nor a channel chunk")

    @property
    def label(self) -> str:
        suffix = ("d" if self.direct else "") + ("p" if self.pixels else "")
        return f"f{self.filters}v{self.vectors}c{self.channels}{suffix}"
