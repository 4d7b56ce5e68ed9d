"""Runs of consecutive compiled layers executed by one C call (`zd_run_steps` in templates/prelude_common.h).

Called layer by layer from Python, every compiled layer costs ~7 us of module call, checks, `torch.empty` and
ctypes on top of its kernel: on a CIFAR ResNet-56 at batch 1 that was a fifth of the package's time. After
`chain_padded_layouts`, `fuse_compiled_segments(gm)` replaces every run of two or more consecutive compiled-layer
nodes with one `CompiledSegment` call: the inputs are checked once, the activations that never leave the run live
in one scratch arena (regions reused once their last reader has run), and only what the rest of the graph reads
is returned as tensors, in the layouts chain_padded_layouts chose.
"""
from __future__ import annotations

import ctypes
import operator

import torch
from torch import fx, nn

from kernels.conv_op import MAX_ELEMENTS, CompiledConv, call_threads, load_library
from kernels.errors import KernelRuntimeError
from kernels.graph_ops import CompiledLayer
from kernels.padded_layout import PaddedLayoutConv

ALIGN = 16  # floats: every arena region starts 64-byte aligned for any batch size


class Step(ctypes.Structure):
    _fields_ = [("fn", ctypes.c_void_p), ("in_off", ctypes.c_int64), ("res_off", ctypes.c_int64),
                ("out_off", ctypes.c_int64), ("in_slot", ctypes.c_int32), ("res_slot", ctypes.c_int32),
                ("out_slot", ctypes.c_int32), ("io", ctypes.c_int32)]


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())


def _shapes(kernel) -> tuple[tuple, tuple, tuple]:
    """Per-item (input, residual, output) shapes of a layer call, in the layouts it was set up with."""
    return kernel._in_shape, getattr(kernel, "_res_shape", kernel._out_shape), kernel._out_shape


def plan_arena(sizes: list[int | None], last_use: list[int]) -> tuple[list[int | None], int]:
    """Offsets (floats per batch item) for step outputs that live in the arena (size not None): a region is free
    again after the step that reads it last, so a step's output never overlaps its own inputs."""
    offsets: list[int | None] = [None] * len(sizes)
    free: list[tuple[int, int]] = []  # (offset, size)
    end = 0
    for step, size in enumerate(sizes):
        free += [(offsets[j], -(-sizes[j] // ALIGN) * ALIGN) for j in range(step)
                 if offsets[j] is not None and last_use[j] == step - 1]
        if size is None:
            continue
        need = -(-size // ALIGN) * ALIGN
        fits = [block for block in free if block[1] >= need]
        if fits:
            block = min(fits, key=lambda b: b[1])
            free.remove(block)
            offsets[step] = block[0]
            if block[1] > need:
                free.append((block[0] + need, block[1] - need))
        else:
            offsets[step], end = end, end + need
    return offsets, end


class CompiledSegment(nn.Module):
    """Several compiled layers in one library call; returns the tensors the rest of the graph reads."""

    def __init__(self, library, layers: list[str], steps: list[Step], input_shapes: list[tuple],
                 output_shapes: list[tuple], arena_per_item: int, max_per_item: int):
        super().__init__()
        self.layers = layers
        run = load_library(library).zd_run_steps
        run.restype = None
        run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._run = run
        self._steps = (Step * len(steps))(*steps)
        self._input_shapes, self._output_shapes = input_shapes, output_shapes
        self._arena, self._max_per_item = arena_per_item, max_per_item
        self._slots = ctypes.c_void_p * (len(input_shapes) + len(output_shapes) + 1)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = inputs[0].shape[0] if isinstance(inputs[0], torch.Tensor) and inputs[0].dim() >= 1 else 0
        if not 1 <= n <= 1 << 16 or n * self._max_per_item > MAX_ELEMENTS:
            raise KernelRuntimeError(f"layers {self.layers[0]!r}..{self.layers[-1]!r}: batch {n} out of range "
                                     f"(at most {MAX_ELEMENTS // self._max_per_item} per call: split the batch)")
        ready = []
        for index, (t, shape) in enumerate(zip(inputs, self._input_shapes)):
            if not (type(t) is torch.Tensor and t.dtype == torch.float32 and t.is_cpu
                    and tuple(t.shape) == (n, *shape)):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise KernelRuntimeError(f"layers {self.layers[0]!r}..{self.layers[-1]!r}: input {index} must be a "
                                         f"float32 CPU tensor of shape {(n, *shape)}, got {got}")
            ready.append(t.contiguous())
        outputs = tuple(torch.empty((n, *shape), dtype=torch.float32) for shape in self._output_shapes)
        arena = torch.empty(n * self._arena, dtype=torch.float32)
        slots = self._slots(*(t.data_ptr() for t in ready), *(t.data_ptr() for t in outputs), arena.data_ptr())
        self._run(self._steps, len(self._steps), slots, n, call_threads())
        return outputs

    def extra_repr(self) -> str:
        return f"layers={len(self.layers)}: {self.layers[0]!r}..{self.layers[-1]!r}"


def _kernel(gm: fx.GraphModule, node: fx.Node):
    """The layer call a node makes when it can join a segment, else None."""
    if node.op != "call_module" or node.kwargs:
        return None
    module = gm.get_submodule(node.target)
    if not isinstance(module, CompiledLayer) or type(module.kernel) not in (CompiledConv, PaddedLayoutConv):
        return None
    kernel = module.kernel
    has_residual = len(node.args) > 1 and node.args[1] is not None
    if has_residual != kernel.spec.residual or not hasattr(load_library(kernel.library), "zd_run_steps"):
        return None
    return module


def _runs(gm: fx.GraphModule) -> list[list[fx.Node]]:
    runs, current = [], []
    for node in gm.graph.nodes:
        if _kernel(gm, node) is not None:
            current.append(node)
            continue
        if len(current) > 1:
            runs.append(current)
        current = []
    return runs + ([current] if len(current) > 1 else [])


def _segment(gm: fx.GraphModule, run: list[fx.Node]) -> tuple[CompiledSegment, list[fx.Node], list[fx.Node]] | None:
    """The segment module for a run, its graph inputs and the run's nodes the rest of the graph reads."""
    position = {node: i for i, node in enumerate(run)}
    kernels = [gm.get_submodule(node.target).kernel for node in run]
    inputs: list[fx.Node] = []
    input_shapes: dict[fx.Node, tuple] = {}
    for node, kernel in zip(run, kernels):
        for arg, shape in zip(node.args[:2], _shapes(kernel)[:2]):
            if isinstance(arg, fx.Node) and arg not in position:
                if input_shapes.setdefault(arg, shape) != shape:
                    return None  # one tensor read in two layouts: leave this run to the layer calls
                if arg not in inputs:
                    inputs.append(arg)
    outputs = [node for node in run if any(user not in position for user in node.users)]
    last_use = [max([i] + [position[u] for u in node.users if u in position]) for i, node in enumerate(run)]
    sizes = [None if node in outputs else _numel(kernel._out_shape) for node, kernel in zip(run, kernels)]
    offsets, arena = plan_arena(sizes, last_use)
    arena_slot = len(inputs) + len(outputs)

    def where(node: fx.Node) -> tuple[int, int]:
        if node in inputs:
            return inputs.index(node), 0
        if node in outputs:
            return len(inputs) + outputs.index(node), 0
        return arena_slot, offsets[position[node]]

    steps = []
    for node, kernel in zip(run, kernels):
        in_slot, in_off = where(node.args[0])
        res_slot, res_off = where(node.args[1]) if kernel.spec.residual else (-1, 0)
        out_slot, out_off = where(node)
        io = kernel.io if isinstance(kernel, PaddedLayoutConv) else -1
        steps.append(Step(ctypes.cast(kernel._fn, ctypes.c_void_p).value, in_off, res_off, out_off,
                          in_slot, res_slot, out_slot, io))
    module = CompiledSegment(kernels[0].library, [gm.get_submodule(n.target).layer for n in run], steps,
                             [input_shapes[node] for node in inputs],
                             [kernels[position[node]]._out_shape for node in outputs], arena,
                             max(kernel._per_item for kernel in kernels))
    return module, inputs, outputs


def fuse_compiled_segments(gm: fx.GraphModule) -> int:
    """Replace every run of consecutive compiled layers with one CompiledSegment call; returns how many."""
    fused = 0
    for run in _runs(gm):
        built = _segment(gm, run)
        if built is None:
            continue
        module, inputs, outputs = built
        name = f"zd_segment_{fused}"
        gm.add_submodule(name, module)
        with gm.graph.inserting_before(run[0]):
            call = gm.graph.call_module(name, tuple(inputs))
            results = [gm.graph.call_function(operator.getitem, (call, i)) for i in range(len(outputs))]
        for node, result in zip(outputs, results):
            result.meta.update(node.meta)
            node.replace_all_uses_with(result, delete_user_cb=lambda user: user not in run)
        for node in reversed(run):
            gm.graph.erase_node(node)
            gm.delete_submodule(node.target)
        fused += 1
    if fused:
        gm.recompile()
    return fused
