"""The placeholder op a compiled conv becomes in the saved graph, and the module that runs it.

`model.pt2` stores each compiled layer as one `zerodata::compiled_conv(x, residual, layer, ...)` call
(a real, registered torch op with a shape function, so the graph exports and loads with torch's own
safe .pt2 format). `load()` swaps every such call for a `CompiledLayer` submodule that runs the
generated kernel; the op itself never computes anything.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import fx, nn


class CompiledGraphError(RuntimeError):
    """A package graph was run without its compiled layers installed, or names a layer it lacks."""


def conv_output_size(size, kernel: int, stride: int, padding: int, dilation: int):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.custom_op("zerodata::compiled_conv", mutates_args=())
def compiled_conv(x: torch.Tensor, residual: Optional[torch.Tensor], layer: str, out_channels: int,
                  stride: int, padding: int, dilation: int, relu: bool) -> torch.Tensor:
    raise CompiledGraphError(
        f"layer {layer!r} is a compiled sparse conv; open the package with kernels.load(package_dir)")


@compiled_conv.register_fake
def _compiled_conv_shape(x, residual, layer, out_channels, stride, padding, dilation, relu):
    n, _, h, w = x.shape
    return x.new_empty((n, out_channels, conv_output_size(h, 3, stride, padding, dilation),
                        conv_output_size(w, 3, stride, padding, dilation)))


COMPILED_CONV = torch.ops.zerodata.compiled_conv.default


class CompiledLayer(nn.Module):
    """One compiled conv (+ folded BN, bias, residual add, ReLU) as a module; `kernel` is a CompiledConv."""

    def __init__(self, layer: str, kernel):
        super().__init__()
        self.layer = layer
        self.kernel = kernel

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # The C kernels read flat NCHW; torch ops upstream may hand over strided views (rarely: checked first).
        if not x.is_contiguous():
            x = x.contiguous()
        if residual is not None and not residual.is_contiguous():
            residual = residual.contiguous()
        return self.kernel(x, residual)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"


def dense_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation,
               relu: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
    """conv (+ residual) (+ ReLU) in torch: the dense path of a site, in the package and in the tuner."""
    y = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation)
    if residual is not None:
        y.add_(residual)  # y is conv2d's fresh output: in place saves a pass and an allocation
    return torch.relu_(y) if relu else y


class DenseLayer(nn.Module):
    """The same layer in dense torch (weights from the compact format): the package's own dense baseline."""

    def __init__(self, layer: str, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int,
                 dilation: int, relu: bool):
        super().__init__()
        self.layer, self.stride, self.padding, self.dilation, self.relu = layer, stride, padding, dilation, relu
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return dense_conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.relu, residual)


class BatchDispatch(nn.Module):
    """Sparse kernel below `dense_from_batch`, the dense layer from it on: autotuning measured at both
    batch sizes and dense won at the larger one, so the package is never slower than dense there."""

    def __init__(self, sparse, dense: nn.Module, dense_from_batch: int):
        super().__init__()
        self.sparse, self.dense, self.dense_from_batch = sparse, dense, int(dense_from_batch)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[0] >= self.dense_from_batch:
            return self.dense(x, residual)
        return self.sparse(x, residual)

    def extra_repr(self) -> str:
        return f"dense_from_batch={self.dense_from_batch}"


def compiled_conv_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == COMPILED_CONV]


def swap_in_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module, args: tuple) -> fx.Node:
    """Put `module` into gm as `name` and let a call to it on `args` take `node`'s place (node erased)."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, args)
    call.meta.update(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    return call


def install_compiled_layers(gm: fx.GraphModule, kernels: dict[str, nn.Module]) -> fx.GraphModule:
    """Replace each `zerodata::compiled_conv` call with a call to `kernels[layer]` (a submodule)."""
    nodes = compiled_conv_nodes(gm)
    missing = sorted({n.args[2] for n in nodes} - set(kernels))
    if missing:
        raise CompiledGraphError(f"the graph calls compiled layers the package does not provide: {missing}")
    for index, node in enumerate(nodes):
        x, residual, layer = node.args[0], node.args[1], node.args[2]
        swap_in_module(gm, node, f"zd_compiled_{index}", CompiledLayer(layer, kernels[layer]), (x, residual))
    gm.recompile()
    return gm
