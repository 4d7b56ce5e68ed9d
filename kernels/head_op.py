"""The classifier head (global average pool -> flatten -> linear) through the library's `zd_classifier_head`.

In torch, ResNet-18's head (adaptive_avg_pool2d, flatten, linear 1000x512) took ~0.3 ms right after the library's
long call for the 3x3 layers, ~3x its time when torch's threads are awake (docs/benchmarks/kernels.md, session
16). One library call on the threads that just ran the layers does it all. Also taken: flatten -> linear with no
pool (a VGG head: a plain linear over C*H*W features). Any input the C code cannot read runs the torch ops.
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import fx, nn

from kernels.conv_op import call_threads, load_library
from kernels.graph_ops import swap_in_module

aten = torch.ops.aten
AVG_POOL_TARGETS = (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
MEAN_TARGETS = (aten.mean.dim,)
FLATTEN_TARGETS = (aten.flatten.using_ints,)
LINEAR_TARGETS = (aten.linear.default,)


class CompiledHead(nn.Module):
    """linear(flatten(mean over H, W of x) if pool else flatten(x)) for contiguous float32 NCHW CPU tensors."""

    def __init__(self, fn, weight: torch.Tensor, bias: torch.Tensor | None, pool: bool):
        super().__init__()
        self._fn, self.pool = fn, pool
        self.register_buffer("weight", weight.detach().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.out_features, self.in_features = self.weight.shape

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = F.adaptive_avg_pool2d(x, 1)
        return F.linear(torch.flatten(x, 1), self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (type(x) is torch.Tensor and x.dtype == torch.float32 and x.dim() == 4 and x.is_cpu):
            return self._torch(x)
        n, c, h, w = x.shape
        channels, hw = (c, h * w) if self.pool else (c * h * w, 1)
        if channels != self.in_features or n == 0 or hw == 0 or n * c * h * w >= 1 << 31:
            return self._torch(x)
        x = x.contiguous()
        y = torch.empty((n, self.out_features), dtype=torch.float32)
        self._fn(x.data_ptr(), self.weight.data_ptr(), None if self.bias is None else self.bias.data_ptr(),
                 y.data_ptr(), n, channels, hw, self.out_features, call_threads())
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pool={self.pool}, " \
               f"bias={self.bias is not None}"


def _call(node, targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def _rank(node: fx.Node) -> int | None:
    val = node.meta.get("val")
    return val.dim() if isinstance(val, torch.Tensor) else None


def _attr(gm: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a get_attr node names, else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _global_pool(node) -> bool:
    """adaptive_avg_pool2d(x, 1) or mean(x, (H, W), keepdim=True) on a 4-D x, read only by the head."""
    if len(node.users) != 1 or _rank(node.args[0]) != 4:
        return False
    if _call(node, AVG_POOL_TARGETS):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return list(size) in ([1], [1, 1]) if isinstance(size, (list, tuple)) else size == 1
    if _call(node, MEAN_TARGETS):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        dtype = node.kwargs.get("dtype")
        return keepdim is True and dtype is None and isinstance(dims, (list, tuple)) \
            and sorted(int(d) % 4 for d in dims) == [2, 3]
    return False


def _head(gm: fx.GraphModule, linear: fx.Node):
    """(source node, nodes the head replaces, weight, bias, pool) for a linear the library can run, else None."""
    if len(linear.args) < 2 or linear.kwargs:
        return None
    flat, weight, bias = linear.args[0], _attr(gm, linear.args[1]), None
    if len(linear.args) > 2 and linear.args[2] is not None:
        bias = _attr(gm, linear.args[2])
        if bias is None or bias.dtype != torch.float32 or bias.dim() != 1:
            return None
    if weight is None or weight.dtype != torch.float32 or weight.dim() != 2:
        return None
    if not _call(flat, FLATTEN_TARGETS) or len(flat.users) != 1 or _rank(flat.args[0]) != 4:
        return None
    start = flat.args[1] if len(flat.args) > 1 else flat.kwargs.get("start_dim", 0)
    end = flat.args[2] if len(flat.args) > 2 else flat.kwargs.get("end_dim", -1)
    if start != 1 or end not in (-1, 3):
        return None
    source = flat.args[0]
    if _global_pool(source):
        return source.args[0], [flat, source], weight, bias, True
    return source, [flat], weight, bias, False


def install_head_layers(gm: fx.GraphModule, library_path) -> int:
    """Replace pool -> flatten -> linear (and flatten -> linear) chains with CompiledHead; returns how many."""
    try:
        fn = load_library(library_path).zd_classifier_head
    except AttributeError:  # a library generated before the head existed: keep torch's ops
        return 0
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5
    count = 0
    for node in list(gm.graph.nodes):
        if not _call(node, LINEAR_TARGETS):
            continue
        head = _head(gm, node)
        if head is None:
            continue
        source, replaced, weight, bias, pool = head
        attrs = [a for a in node.args[1:3] if isinstance(a, fx.Node)]
        swap_in_module(gm, node, f"zd_head_{count}", CompiledHead(fn, weight, bias, pool), (source,))
        for old in replaced:  # flatten, then the pool: each now without users
            gm.graph.erase_node(old)
        for attr in attrs:  # the weight's and bias's get_attr nodes, unless read elsewhere too
            if not attr.users:
                gm.graph.erase_node(attr)
        count += 1
    if count:
        gm.recompile()
    return count
