"""Activations handed from one compiled layer to the next in the padded layout: the reader skips its pad pass.

A same-padded layer (3x3, stride 1, padding 1, dilation 1: `geometry.same_padded`) computes its outputs on a
flat grid of row width W + 2; shifted by padded_lead(W) + W + 3 that grid IS the zero-padded input the next
such layer reads.
Such layers also export `zd_<layer>_io(x, res, y, batch, threads, io)`, whose io bits put the input, the
residual and / or the output in that layout: (N, C, padded_layout_len(H, W)) floats, the zero-padded
(H + 2) x (W + 2) plane from padded_lead(W) on, zeros after it (the lead before it is never read).

`chain_padded_layouts(gm)` runs on a loaded package's graph: a compiled layer's output goes over padded when
every reader is a compiled same-padded layer taking it as input or residual. Anything else (torch ops, dense
fallbacks, batch-dispatched layers, stride-2 readers, the graph's output) still gets NCHW, so the model's own
inputs and outputs never change.
"""
from __future__ import annotations

import ctypes

import torch
from torch import fx

from kernels.conv_op import MAX_ELEMENTS, CompiledConv, call_threads, load_library
from kernels.errors import KernelRuntimeError
from kernels.geometry import padded_lead, padded_layout_len, same_padded
from kernels.graph_ops import CompiledLayer

IN_PADDED, RES_PADDED, OUT_PADDED = 1, 2, 4  # ZD_*_PADDED in templates/prelude_common.h


def _plane(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    lead = padded_lead(w)
    return p[:, :, lead:lead + (h + 2) * (w + 2)].unflatten(2, (h + 2, w + 2))


def to_padded(x: torch.Tensor) -> torch.Tensor:
    """NCHW -> the padded layout (for fallbacks and tests; the kernels write it themselves)."""
    n, c, h, w = x.shape
    out = torch.zeros((n, c, padded_layout_len(h, w)), dtype=x.dtype)
    _plane(out, h, w)[:, :, 1:h + 1, 1:w + 1] = x
    return out


def from_padded(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return _plane(p, h, w)[:, :, 1:h + 1, 1:w + 1].contiguous()


def has_padded_entry(conv: CompiledConv) -> bool:
    """The library takes this layer's padded layout, of the length this code computes. Libraries generated
    before the layout (no _io entry) or with another length (older code) keep their layers NCHW: a length
    mismatch would read and write out of bounds."""
    if not same_padded(conv.spec):
        return False
    library = load_library(conv.library)
    length = getattr(library, conv.symbol + "_padded_len", None)
    if length is None or not hasattr(library, conv.symbol + "_io"):
        return False
    length.restype, length.argtypes = ctypes.c_int, []
    return length() == padded_layout_len(conv.spec.height, conv.spec.width)


class PaddedLayoutConv:
    """A same-padded compiled layer called with fixed io bits; takes and returns tensors in those layouts."""

    def __init__(self, conv: CompiledConv, io: int):
        s = conv.spec
        if not same_padded(s) or not 0 < io <= 7:
            raise KernelRuntimeError(f"layer {s.name!r}: no padded layout for this layer (io={io})")
        fn = getattr(load_library(conv.library), conv.symbol + "_io")
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.spec, self.io, self._fn, self.library = s, io, fn, conv.library
        length = padded_layout_len(s.height, s.width)  # the output map is the input map
        self._in_shape = (s.in_channels, length) if io & IN_PADDED else (s.in_channels, s.height, s.width)
        self._res_shape = (s.out_channels, length) if io & RES_PADDED else (s.out_channels, s.height, s.width)
        self._out_shape = (s.out_channels, length) if io & OUT_PADDED else (s.out_channels, s.height, s.width)
        per = lambda shape: int(torch.Size(shape).numel())  # noqa: E731
        self._per_item = per(self._in_shape) + per(self._out_shape) + (per(self._res_shape) if s.residual else 0)

    def _check(self, t, what: str, shape: tuple[int, ...], n: int) -> None:
        if not (type(t) is torch.Tensor and t.dtype == torch.float32 and t.is_cpu and t.is_contiguous()
                and tuple(t.shape) == (n, *shape)):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise KernelRuntimeError(f"layer {self.spec.name!r}: {what} must be a contiguous float32 CPU tensor of "
                                     f"shape {(n, *shape)} (padded layout bits {self.io}), got {got}")

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() >= 1 else 0
        if not 1 <= n <= 1 << 16 or n * self._per_item > MAX_ELEMENTS:
            raise KernelRuntimeError(f"layer {self.spec.name!r}: batch {n} out of range")
        self._check(x, "input", self._in_shape, n)
        if (residual is None) == self.spec.residual:
            raise KernelRuntimeError(f"layer {self.spec.name!r}: residual given iff the layer fuses one")
        if residual is not None:
            self._check(residual, "residual", self._res_shape, n)
        y = torch.empty((n, *self._out_shape), dtype=torch.float32)
        self._fn(x.data_ptr(), None if residual is None else residual.data_ptr(), y.data_ptr(), n,
                 call_threads(), self.io)
        return y


def _padded_readers(node: fx.Node, shape: tuple | None,
                    layers: dict[fx.Node, CompiledConv]) -> list[tuple[fx.Node, int]] | None:
    """(reader, io bit) for every use of node's output ((C, H, W) = shape; None: take the readers' word), or None
    when some reader needs NCHW."""
    uses = []
    for user in node.users:
        if user not in layers or user.kwargs or node not in user.args[:2] or node in user.args[2:]:
            return None
        reader = layers[user].spec
        for position, bit, wants in ((0, IN_PADDED, (reader.in_channels, reader.height, reader.width)),
                                     (1, RES_PADDED, (reader.out_channels, reader.height, reader.width))):
            if len(user.args) > position and user.args[position] is node:
                shape = shape or wants
                if wants != shape:
                    return None
                uses.append((user, bit))
    return uses or None


def chain_padded_layouts(gm: fx.GraphModule) -> int:
    """Switch every eligible producer -> readers edge of gm to the padded layout; returns how many producers
    now write it. Producers: compiled same-padded layers, and the library's max-pool."""
    from kernels.pool_op import CompiledMaxPool
    layers, pools = {}, {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, CompiledLayer) and type(module.kernel) is CompiledConv \
                    and has_padded_entry(module.kernel):
                layers[node] = module
            elif isinstance(module, CompiledMaxPool) and module.fn_io is not None:
                pools[node] = module
    kernels = {node: module.kernel for node, module in layers.items()}
    io = dict.fromkeys(layers, 0)
    producers = 0
    for node in [*layers, *pools]:
        spec = kernels[node].spec if node in layers else None
        readers = _padded_readers(node, spec and (spec.out_channels, spec.height, spec.width), kernels)
        if not readers:
            continue
        producers += 1
        if node in layers:
            io[node] |= OUT_PADDED
        else:
            reader = kernels[readers[0][0]].spec
            pools[node].padded_map = (reader.height, reader.width)
        for reader, bit in readers:
            io[reader] |= bit
    for node, bits in io.items():
        if bits:
            layers[node].kernel = PaddedLayoutConv(kernels[node], bits)
    return producers
