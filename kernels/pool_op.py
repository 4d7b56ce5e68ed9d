"""Max-pool (optionally of a ReLU) through the kernel library's `zd_max_pool2d`, swapped into a loaded graph.

torch's NCHW max_pool2d runs at a fraction of memory speed on one core (ResNet-18 stem pool: ~6 ms, as much
as four compiled 3x3 layers); the library's plain C loop takes ~0.15 ms. Only floor-mode, dilation-1,
square pools are taken; anything else, and any input the C loop cannot read, stays torch.
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import fx, nn

from kernels.conv_op import call_threads, load_library
from kernels.errors import KernelRuntimeError
from kernels.graph_ops import swap_in_module

aten = torch.ops.aten
POOL_TARGETS = (aten.max_pool2d.default,)
RELU_TARGETS = (aten.relu.default,)


class CompiledMaxPool(nn.Module):
    """max_pool2d(relu(x) if relu else x, k, s, p) on contiguous float32 NCHW CPU tensors.

    With `padded_map` = (Ho, Wo) set (kernels/padded_layout.py) it returns its output in the padded layout the
    compiled layers reading it take, (N, C, padded_layout_len(Ho, Wo)); `fn_io` is the library's entry for that."""

    def __init__(self, fn, kernel: int, stride: int, padding: int, relu: bool, fn_io=None):
        super().__init__()
        self._fn, self.kernel, self.stride, self.padding, self.relu = fn, kernel, stride, padding, relu
        self.fn_io = fn_io
        self.padded_map: tuple[int, int] | None = None

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(torch.relu(x) if self.relu else x, self.kernel, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded_map is not None:
            return self._padded(x)
        if not (type(x) is torch.Tensor and x.dtype == torch.float32 and x.dim() == 4 and x.is_cpu):
            return self._torch(x)
        n, c, h, w = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        if n * c == 0 or n * c >= 1 << 31 or h + 2 * p < k or w + 2 * p < k:
            return self._torch(x)
        x = x.contiguous()
        y = torch.empty((n, c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1), dtype=torch.float32)
        self._fn(x.data_ptr(), y.data_ptr(), n * c, h, w, k, s, p, int(self.relu),
                 call_threads())
        return y

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.geometry import padded_lead, padded_layout_len
        from kernels.padded_layout import to_padded
        n, c, h, w = x.shape
        k, s, p = self.kernel, self.stride, self.padding
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if (ho, wo) != self.padded_map:
            raise KernelRuntimeError(f"max-pool output is {ho}x{wo}, its compiled readers take {self.padded_map}")
        if not (type(x) is torch.Tensor and x.dtype == torch.float32 and x.is_cpu and 0 < n * c < 1 << 31):
            return to_padded(self._torch(x).float())
        x = x.contiguous()
        y = torch.empty((n, c, padded_layout_len(ho, wo)), dtype=torch.float32)
        self.fn_io(x.data_ptr(), y.data_ptr(), n * c, h, w, k, s, p, int(self.relu),
                   call_threads(), y.shape[2], padded_lead(wo))
        return y

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, relu={self.relu}"


def _square(value, default: int) -> int | None:
    values = [value] if isinstance(value, int) else list(value or [])
    values = values or [default]
    return int(values[0]) if all(int(v) == int(values[0]) for v in values) else None


def _pool_params(node: fx.Node) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a max_pool2d node the C loop computes exactly, else None."""
    args = list(node.args) + [None] * (6 - len(node.args))
    kernel = _square(node.kwargs.get("kernel_size", args[1]), 1)
    stride = _square(node.kwargs.get("stride", args[2]) or kernel, kernel)
    padding = _square(node.kwargs.get("padding", args[3]) or 0, 0)
    dilation = _square(node.kwargs.get("dilation", args[4]) or 1, 1)
    ceil_mode = bool(node.kwargs.get("ceil_mode", args[5]) or False)
    if None in (kernel, stride, padding) or dilation != 1 or ceil_mode or 2 * padding > kernel:
        return None
    return kernel, stride, padding


def install_pool_layers(gm: fx.GraphModule, library_path) -> int:
    """Replace max_pool2d calls (and a ReLU feeding only the pool) with CompiledMaxPool; returns how many."""
    try:
        fn = load_library(library_path).zd_max_pool2d
    except AttributeError:  # a library generated before the pool existed: keep torch's pool
        return 0
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 8
    fn_io = getattr(load_library(library_path), "zd_max_pool2d_io", None)  # absent from older libraries
    if fn_io is not None:
        fn_io.restype = None
        fn_io.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 10
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in POOL_TARGETS:
            continue
        params = _pool_params(node)
        if params is None:
            continue
        source, relu = node.args[0], False
        if isinstance(source, fx.Node) and source.op == "call_function" and source.target in RELU_TARGETS \
                and len(source.users) == 1:
            source, relu = source.args[0], True
        old_source = node.args[0]
        swap_in_module(gm, node, f"zd_max_pool_{count}", CompiledMaxPool(fn, *params, relu, fn_io), (source,))
        if relu:
            gm.graph.erase_node(old_source)
        count += 1
    if count:
        gm.recompile()
    return count
