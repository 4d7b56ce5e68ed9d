"""Targets that repair the residual stream: a conv whose (BatchNorm) output is added to a shortcut is fitted so the
SUM matches the dense model's, not only its own branch.

Layer-wise reconstruction fits each conv to the dense model's output of that conv; the shortcut carries the error of
everything pruned before it, unrepaired, and it accumulates block after block. For the last conv of a block,
    bn(y) + shortcut_student  should equal  bn_t(y_t) + shortcut_teacher,
so its target becomes y_t + (shortcut_teacher - shortcut_student) / k with k = gamma / sqrt(var + eps) per
channel (the BatchNorm's slope); the objective stays a least-squares problem in the same statistics.
Only for torch.fx graphs (loaded .pt2 and .onnx models are), found by their add nodes; ONNX exports usually fold
the BatchNorm into the conv, whose output then feeds the add directly (slope 1).
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

from worker.engine.formats import onnx_ops

_ADDS = {operator.add, torch.add, torch.ops.aten.add.Tensor, onnx_ops.add}  # onnx_ops.add: ONNX imports


class _Stop(Exception):
    pass


def shortcut_node(module: nn.Module, layer_name: str, bn_name: str | None) -> fx.Node | None:
    """The node whose value is added to the layer's (BatchNorm's) output, or None if there is no such add."""
    graph = getattr(module, "graph", None)
    if not isinstance(graph, fx.Graph):
        return None
    source = bn_name or layer_name
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == source]
    if len(nodes) != 1 or len(nodes[0].users) != 1:
        return None
    add = next(iter(nodes[0].users))
    if add.op != "call_function" or add.target not in _ADDS or len(add.args) != 2 or add.kwargs:
        return None
    other = [a for a in add.args if a is not nodes[0]]
    if len(other) != 1 or not isinstance(other[0], fx.Node):
        return None
    return other[0]


class _UpTo(fx.Interpreter):
    """Runs a graph module only until one node has been computed, and returns that node's value."""

    def __init__(self, module: fx.GraphModule, stop_at: str):
        super().__init__(module)
        self.stop_at, self.value = stop_at, None

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name == self.stop_at:
            self.value = out
            raise _Stop
        return out


@torch.no_grad()
def node_value(module: fx.GraphModule, node_name: str, x: torch.Tensor) -> torch.Tensor:
    runner = _UpTo(module, node_name)
    try:
        runner.run(x)
    except _Stop:
        return runner.value
    raise RuntimeError(f"node {node_name} was not reached")


def bn_slope(bn: nn.Module | None, cout: int) -> torch.Tensor:
    """Signed per-channel slope of an eval-mode BatchNorm (1 without one), kept away from 0."""
    if bn is None:
        return torch.ones(cout)
    k = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).double().cpu()
    floor = float(k.abs().max()) * 1e-3 + 1e-12
    return torch.where(k >= 0, k.clamp_min(floor), k.clamp_max(-floor))


class ResidualTarget:
    """Per batch: the shift to add to the dense conv output so the student's residual sum matches the teacher's."""

    def __init__(self, student: fx.GraphModule, teacher: fx.GraphModule, node_name: str, slope: torch.Tensor):
        self.student, self.teacher, self.node = student, teacher, node_name
        self.slope = slope

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        diff = node_value(self.teacher, self.node, x) - node_value(self.student, self.node, x)
        return diff / self.slope.to(diff).view(1, -1, *([1] * (diff.dim() - 2)))
