"""A compiled few-channel conv and the max-pool reading it, in one library call (kernels/pixel_conv.py).

In ResNets the stem conv (3 -> 64, 7x7/2, BN and ReLU folded) feeds a 3x3/2 max-pool only. Its pixels-tile
library exports `zd_<layer>_pool`, which pools rows of conv outputs while they are in cache and writes only
the pooled map (NCHW, or the padded layout the next compiled layers read): the 112x112x64 map never goes to
memory and the pool's own pass over it is gone. `fuse_conv_pools(gm)` runs on a loaded graph after
`install_pool_layers`; anything the fused call cannot take runs the conv and the pool as before.
"""
from __future__ import annotations

import ctypes

import torch
from torch import fx

from kernels.conv_op import MAX_ELEMENTS, CompiledConv, call_threads, load_library
from kernels.errors import KernelRuntimeError
from kernels.graph_ops import CompiledLayer, swap_in_module
from kernels.pool_op import CompiledMaxPool


class CompiledConvPool(CompiledMaxPool):
    """max_pool2d(conv(x)) in one call; the pool's interface (padded_map included) for kernels/padded_layout.py."""

    def __init__(self, conv: CompiledConv, pool: CompiledMaxPool, fused):
        super().__init__(pool._fn, pool.kernel, pool.stride, pool.padding, pool.relu, pool.fn_io)
        self.conv, self._fused = conv, fused
        s = conv.spec
        self._in_shape, self._per_item = (s.in_channels, s.height, s.width), conv._per_item

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (type(x) is torch.Tensor and x.dtype == torch.float32 and x.dim() == 4 and x.is_cpu
                and tuple(x.shape[1:]) == self._in_shape and 1 <= x.shape[0] <= 1 << 16
                and x.shape[0] * self._per_item <= MAX_ELEMENTS):
            return super().forward(self.conv(x))  # the two calls, with all their checks and fallbacks
        from kernels.geometry import padded_lead, padded_layout_len
        s, k, st, p = self.conv.spec, self.kernel, self.stride, self.padding
        n, ho, wo = x.shape[0], (s.out_height + 2 * p - k) // st + 1, (s.out_width + 2 * p - k) // st + 1
        x = x.contiguous()
        if self.padded_map is None:
            y, length, lead = torch.empty((n, s.out_channels, ho, wo), dtype=torch.float32), 0, 0
        elif (ho, wo) != self.padded_map:
            raise KernelRuntimeError(f"max-pool output is {ho}x{wo}, its compiled readers take {self.padded_map}")
        else:
            length, lead = padded_layout_len(ho, wo), padded_lead(wo)
            y = torch.empty((n, s.out_channels, length), dtype=torch.float32)
        self._fused(x.data_ptr(), y.data_ptr(), n, call_threads(), k, st, p, int(self.relu), length, lead)
        return y

    def extra_repr(self) -> str:
        return f"conv={self.conv.spec.name!r}, " + super().extra_repr()


def _fused_entry(conv: CompiledConv):
    fn = getattr(load_library(conv.library), conv.symbol + "_pool", None)
    if fn is not None:
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 8
    return fn


def fuse_conv_pools(gm: fx.GraphModule) -> int:
    """Replace conv -> pool pairs (a compiled conv whose only reader is a library max-pool, a library with the
    fused entry) by one CompiledConvPool; returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(gm.get_submodule(node.target)) is not CompiledMaxPool:
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and not source.kwargs and (len(source.args) < 2 or source.args[1] is None)):
            continue
        layer = gm.get_submodule(source.target)
        if not isinstance(layer, CompiledLayer) or type(layer.kernel) is not CompiledConv:
            continue
        fused = _fused_entry(layer.kernel)
        if fused is None:
            continue
        swap_in_module(gm, node, f"zd_compiled_conv_pool_{count}",
                       CompiledConvPool(layer.kernel, gm.get_submodule(node.target), fused), (source.args[0],))
        gm.graph.erase_node(source)
        gm.delete_submodule(node.target)
        gm.delete_submodule(source.target)
        count += 1
    if count:
        gm.recompile()
    return count
