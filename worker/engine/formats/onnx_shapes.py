"""Shape arithmetic of ONNX graphs as plain Python values instead of int64 tensors.

Exporters compute reshape targets in the graph (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, for
`x.view(x.size(0), -1)` with a dynamic batch). Done with tensors, every target is data-dependent and the
converted model cannot be traced by torch.export (the kernel compiler needs that). Done with Python
ints, a dynamic batch stays a symbolic size and the graph traces. A shape value is an int (a 0-d ONNX
value) or a list of ints; these functions mirror the ONNX ops on such values.
"""
from __future__ import annotations

import operator

import torch


def as_shape_value(value):
    """A constant tensor -> int (0-d) or list of ints; shape values pass through."""
    if isinstance(value, torch.Tensor):
        return int(value) if value.dim() == 0 else [int(v) for v in value.tolist()]
    return value


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def shape(x, start=0, end=None):
    return list(x.shape)[start:end]


def gather(values, indices, axis=0):
    if axis != 0:
        raise ValueError("Gather on a shape value takes axis 0")
    indices = as_shape_value(indices)
    if isinstance(indices, list):
        return [values[i] for i in indices]
    return values[indices]


def unsqueeze(value, axes=None):
    return [value]  # on shape values only 0-d -> 1-d occurs


def squeeze(value, axes=None):
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def concat(*values, axis=0):
    return [v for value in values for v in _as_list(as_shape_value(value))]


def slice_(values, starts, ends, axes=None, steps=None):
    start, end = as_shape_value(starts), as_shape_value(ends)
    step = as_shape_value(steps) if steps is not None else [1]
    return values[start[0]:end[0]:step[0]]


def identity(value, *_, **__):
    return value


def _elementwise(fn):
    def apply(a, b):
        a, b = as_shape_value(a), as_shape_value(b)
        if not isinstance(a, list) and not isinstance(b, list):
            return fn(a, b)
        a, b = _as_list(a), _as_list(b)
        n = max(len(a), len(b))  # ONNX broadcasting of 1-D values: a length-1 side repeats
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        return [fn(x, y) for x, y in zip(a, b)]
    return apply


add = _elementwise(operator.add)
sub = _elementwise(operator.sub)
mul = _elementwise(operator.mul)
div = _elementwise(operator.floordiv)  # ONNX integer Div truncates; sizes are never negative

# ONNX op -> its version on shape values (ops whose output is again a shape value)
FUNCTIONS = {
    "Shape": shape, "Gather": gather, "Unsqueeze": unsqueeze, "Squeeze": squeeze, "Concat": concat,
    "Slice": slice_, "Cast": identity, "Identity": identity, "Add": add, "Sub": sub, "Mul": mul, "Div": div,
}


def to_tensor(value) -> torch.Tensor:
    """A shape value used where the graph needs a tensor (rare): int64, as ONNX has it."""
    return torch.tensor(value, dtype=torch.int64)
