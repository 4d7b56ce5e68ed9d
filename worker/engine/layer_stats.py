"""Second-order statistics of one layer's reconstruction problem, streamed over synthetic batches.

For a layer y = W a (a = im2col of the input for convs), the sequential objective
||W A_student - W0 A_teacher||^2 only needs H = A_s^T A_s, B = A_s^T Y_t and the target energy, so
no activations are kept once a batch has been folded in.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class _Stop(Exception):
    pass


@dataclass
class LayerStats:
    H: torch.Tensor      # D x D, float64
    B: torch.Tensor      # D x Cout, float64
    yy: torch.Tensor     # Cout, sum of squared targets
    a_sum: torch.Tensor  # D, column sums of the student inputs
    y_sum: torch.Tensor  # Cout, sums of the targets
    rows: int


def as_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as a (rows, D) matrix in the weight's flattened order."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # N x D x L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])


def capture(model: nn.Module, layer: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """Run `model` on x just far enough to see `layer`'s input ("input") or output ("output")."""
    box: list[torch.Tensor] = []

    def hook(mod, inputs, output):
        box.append(inputs[0] if what == "input" else output)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError("layer was not called by the model's forward")
    return box[0]


def accumulate(student: nn.Module, s_layer: nn.Module, teacher: nn.Module, t_layer: nn.Module,
               images: torch.Tensor, batch: int, target_shift=None) -> LayerStats:
    """`target_shift` (optional, batch -> tensor shaped like the layer output) is added to the teacher's output:
    what the layer should produce beyond it (residual_targets.py)."""
    H = B = yy = a_sum = y_sum = None
    rows = 0
    for i in range(0, len(images), batch):
        xb = images[i:i + batch]
        a = as_rows(s_layer, capture(student, s_layer, xb, "input")).double()
        y_t = capture(teacher, t_layer, xb, "output")
        if getattr(t_layer, "bias", None) is not None:
            y_t = y_t - (t_layer.bias.view(1, -1, *([1] * (y_t.dim() - 2))) if y_t.dim() > 2 else t_layer.bias)
        if target_shift is not None:
            y_t = y_t + target_shift(xb).to(y_t)
        y = output_rows(t_layer, y_t).double()
        if H is None:
            H, B = a.T @ a, a.T @ y
            yy, a_sum, y_sum = (y * y).sum(0), a.sum(0), y.sum(0)
        else:
            H += a.T @ a
            B += a.T @ y
            yy += (y * y).sum(0)
            a_sum += a.sum(0)
            y_sum += y.sum(0)
        rows += a.shape[0]
    return LayerStats(H, B, yy, a_sum, y_sum, rows)
