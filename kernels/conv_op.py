"""Run one compiled layer from torch through ctypes: NCHW float32 contiguous in, out."""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from kernels.errors import KernelRuntimeError
from kernels.spec import ConvSpec

MAX_ELEMENTS = 1 << 30
MAX_THREADS = 64
_LIBRARIES: dict[str, ctypes.CDLL] = {}
_LOCK = threading.Lock()


def call_threads() -> int:
    """Threads a library call runs on: torch's intra-op count, within what the generated pool supports."""
    return min(MAX_THREADS, max(1, torch.get_num_threads()))


def load_library(path: Path) -> ctypes.CDLL:
    """Load a kernel library once per process (ctypes keeps it mapped)."""
    key = str(Path(path).resolve())
    with _LOCK:
        if key not in _LIBRARIES:
            try:
                _LIBRARIES[key] = ctypes.CDLL(key)
            except OSError as exc:
                raise KernelRuntimeError(f"cannot load kernel library {key}: {exc}") from None
        return _LIBRARIES[key]


class CompiledConv:
    """Callable wrapper of one layer's extern "C" function; threads follow torch.get_num_threads()."""

    def __init__(self, library: Path, spec: ConvSpec, symbol: str | None = None):
        self.spec = spec
        self.library = Path(library)
        self.symbol = symbol or spec.symbol
        lib = load_library(self.library)
        try:
            fn = getattr(lib, self.symbol)
        except AttributeError:
            raise KernelRuntimeError(f"kernel library {self.library} has no symbol {self.symbol!r}") from None
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._fn = fn
        self._in_shape = (spec.in_channels, spec.height, spec.width)
        self._out_shape = (spec.out_channels, spec.out_height, spec.out_width)
        self._per_item = spec.in_channels * spec.height * spec.width + spec.out_channels * spec.out_height * \
            spec.out_width

    def _check(self, t: torch.Tensor, what: str, shape: tuple[int, ...]) -> None:
        if not isinstance(t, torch.Tensor):
            raise KernelRuntimeError(f"layer {self.spec.name!r}: {what} must be a tensor")
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise KernelRuntimeError(f"layer {self.spec.name!r}: {what} must be a contiguous float32 CPU tensor, "
                                     f"got {t.dtype} on {t.device} (contiguous={t.is_contiguous()})")
        if tuple(t.shape) != shape:
            raise KernelRuntimeError(f"layer {self.spec.name!r}: {what} has shape {tuple(t.shape)}, expected {shape}")

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # Fast path, the common case inside a model: every check below in a few attribute reads.
        if type(x) is torch.Tensor and x.dtype == torch.float32 and x.dim() == 4 and x.shape[1:] == self._in_shape \
                and x.is_contiguous() and x.is_cpu and (residual is None) == (not self.spec.residual):
            n = x.shape[0]
            if 1 <= n <= 1 << 16 and n * self._per_item <= MAX_ELEMENTS and (residual is None or (
                    type(residual) is torch.Tensor and residual.dtype == torch.float32
                    and residual.shape == (n, *self._out_shape) and residual.is_contiguous()
                    and residual.is_cpu)):
                y = torch.empty((n, *self._out_shape), dtype=torch.float32)
                self._fn(x.data_ptr(), None if residual is None else residual.data_ptr(), y.data_ptr(), n,
                         call_threads())
                return y
        return self._checked_call(x, residual)

    def _checked_call(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        s = self.spec
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise KernelRuntimeError(f"layer {s.name!r}: input must be a 4-D NCHW tensor")
        n = int(x.shape[0])
        if n < 1 or n > 1 << 16:
            raise KernelRuntimeError(f"layer {s.name!r}: batch {n} out of range")
        self._check(x, "input", (n, s.in_channels, s.height, s.width))
        per_item = s.in_channels * s.height * s.width + s.out_channels * s.out_height * s.out_width
        if n * per_item > MAX_ELEMENTS:
            raise KernelRuntimeError(f"layer {s.name!r}: batch {n} moves more than {MAX_ELEMENTS} floats in one "
                                     "call (32-bit indexing in the kernel): split the batch")
        out_shape = (n, s.out_channels, s.out_height, s.out_width)
        if s.residual:
            if residual is None:
                raise KernelRuntimeError(f"layer {s.name!r} fuses a residual add: pass the residual tensor")
            self._check(residual, "residual", out_shape)
        elif residual is not None:
            raise KernelRuntimeError(f"layer {s.name!r} was compiled without a residual add")
        y = torch.empty(out_shape, dtype=torch.float32)
        res_ptr = residual.data_ptr() if residual is not None else None
        self._fn(x.data_ptr(), res_ptr, y.data_ptr(), n, call_threads())
        return y
