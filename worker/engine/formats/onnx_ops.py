"""Torch implementations of the ONNX operators real CNNs use, with ONNX semantics.

Each function takes the node's inputs positionally (tensors, or None for an omitted optional input)
and its attributes as keyword arguments named as in the ONNX spec. The converter calls them at
conversion time when every input is constant (constant folding) and otherwise puts them in the FX
graph as `call_function` nodes. Conv, BatchNormalization, Gemm and MatMul-by-constant become real
modules in the converter instead.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ONNX TensorProto.DataType -> torch dtype
DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
          9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _ints(value) -> list[int]:
    """Sizes/axes from a tensor or from a shape value; symbolic sizes (a dynamic batch) stay symbolic."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [v if isinstance(v, torch.SymInt) else int(v) for v in value]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- elementwise --------------------------------------------------------------------------------
def add(a, b): return a + b
def sub(a, b): return a - b
def mul(a, b): return a * b
def pow_(a, b): return torch.pow(a, b)
def relu(x): return torch.relu(x)
def sigmoid(x): return torch.sigmoid(x)
def tanh(x): return torch.tanh(x)
def exp(x): return torch.exp(x)
def log(x): return torch.log(x)
def sqrt(x): return torch.sqrt(x)
def neg(x): return torch.neg(x)
def abs_(x): return torch.abs(x)
def reciprocal(x): return torch.reciprocal(x)
def erf(x): return torch.erf(x)
def floor(x): return torch.floor(x)
def ceil(x): return torch.ceil(x)
def identity(x, **_): return x
def hard_swish(x): return F.hardswish(x)
def equal(a, b): return torch.eq(a, b)
def less(a, b): return torch.lt(a, b)
def greater(a, b): return torch.gt(a, b)
def not_(x): return torch.logical_not(x)
def where(c, a, b): return torch.where(c, a, b)
def softplus(x): return F.softplus(x)


def div(a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def leaky_relu(x, alpha=0.01): return F.leaky_relu(x, alpha)
def elu(x, alpha=1.0): return F.elu(x, alpha)
def hard_sigmoid(x, alpha=0.2, beta=0.5): return torch.clamp(alpha * x + beta, 0.0, 1.0)
def gelu(x, approximate="none"): return F.gelu(x, approximate=approximate)


def clip(x, lo=None, hi=None, min=None, max=None):  # noqa: A002 (ONNX attribute names, opset < 11)
    lo = min if lo is None else lo
    hi = max if hi is None else hi
    if lo is not None and not isinstance(lo, torch.Tensor):
        lo = torch.tensor(lo, dtype=x.dtype)
    if hi is not None and not isinstance(hi, torch.Tensor):
        hi = torch.tensor(hi, dtype=x.dtype)
    if lo is not None:
        x = torch.maximum(x, lo.to(x.device))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.device))
    return x


def variadic_max(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def variadic_min(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = torch.minimum(out, x)
    return out


def variadic_sum(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def softmax(x, axis=-1, _opset=13):
    if _opset >= 13:
        return torch.softmax(x, axis)
    axis = _axis(axis, x.dim())  # opsets < 13: coerce to 2-D at `axis`
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return torch.softmax(flat, 1).reshape(x.shape)


# -- shapes -------------------------------------------------------------------------------------
def shape(x, start=0, end=None):
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


def flatten(x, axis=1):
    axis = _axis(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


def reshape(x, target, allowzero=0):
    sizes = _ints(target)
    if not allowzero:
        sizes = [x.shape[i] if s == 0 else s for i, s in enumerate(sizes)]
    return x.reshape(sizes)


def reshape_batch_first(x, target, allowzero=0):
    """Reshape whose first target size is the exporter's fixed batch: it takes x's batch instead."""
    sizes = _ints(target)
    return reshape(x, [x.shape[0], *sizes[1:]], allowzero)


def transpose(x, perm=None):
    return x.permute(list(perm) if perm is not None else list(range(x.dim() - 1, -1, -1)))


def squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in _ints(axes)))


def unsqueeze(x, axes):
    rank = x.dim() + len(_ints(axes))
    for a in sorted(_axis(a, rank) for a in _ints(axes)):
        x = x.unsqueeze(a)
    return x


def concat(*xs, axis):
    return torch.cat(xs, axis)


def slice_(x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, x.dim())
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index = torch.arange(start, end, step, device=x.device)
        x = x.index_select(axis, index)
    return x


def gather(x, indices, axis=0):
    axis = _axis(axis, x.dim())
    indices = torch.where(indices < 0, indices + x.shape[axis], indices).to(torch.int64)
    picked = x.index_select(axis, indices.reshape(-1))
    return picked.reshape([*x.shape[:axis], *indices.shape, *x.shape[axis + 1:]])  # may be 0-d


def constant_of_shape(target, value=None):
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return torch.full(_ints(target), fill.reshape(-1)[0].item(), dtype=fill.dtype)


def cast(x, to):
    return x.to(DTYPES[to])


def cast_like(x, like):
    return x.to(like.dtype)


def expand(x, target):
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(target))))


def split(x, sizes=None, axis=0, split=None, num_outputs=None, _outputs=1):
    sizes = _ints(sizes) if sizes is not None else (_ints(split) if split is not None else None)
    if sizes is None:
        dim = x.shape[_axis(axis, x.dim())]
        chunk = -(-dim // _outputs)
        sizes = [min(chunk, dim - i * chunk) for i in range(_outputs)]
    return tuple(torch.split(x, sizes, axis))


def pad(x, pads=None, constant_value=None, axes=None, mode="constant", value=0.0):
    pads = _ints(pads)
    rank = x.dim()
    axes = [_axis(a, rank) for a in _ints(axes)] if axes is not None else list(range(rank))
    n = len(axes)
    begin, end = dict(zip(axes, pads[:n])), dict(zip(axes, pads[n:]))
    padded = [a for a in range(rank) if begin.get(a, 0) or end.get(a, 0)]
    torch_pads = []
    for a in range(rank - 1, min(padded, default=rank - 1) - 1, -1):  # torch lists the last dim first
        torch_pads += [begin.get(a, 0), end.get(a, 0)]
    fill = value if constant_value is None else float(torch.as_tensor(constant_value).reshape(-1)[0])
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if torch_mode == "constant":
        return F.pad(x, torch_pads, mode="constant", value=fill)
    return F.pad(x, torch_pads, mode=torch_mode)


# -- pooling and reductions ---------------------------------------------------------------------
def global_average_pool(x): return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
def global_max_pool(x): return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def average_pool(x, kernel_shape, strides=None, pads=None, count_include_pad=0, ceil_mode=0):
    pads = pads or [0, 0, 0, 0]
    return F.avg_pool2d(x, list(kernel_shape), list(strides or kernel_shape_ones(kernel_shape)),
                        padding=(pads[0], pads[1]), ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))


def max_pool(x, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    pads = pads or [0, 0, 0, 0]
    padding = (pads[0], pads[1])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value=float("-inf"))
        padding = (0, 0)
    return F.max_pool2d(x, list(kernel_shape), list(strides or kernel_shape_ones(kernel_shape)),
                        padding=padding, dilation=list(dilations or [1, 1]), ceil_mode=bool(ceil_mode))


def kernel_shape_ones(kernel_shape):
    return [1] * len(kernel_shape)


def _reduce(fn, x, axes, keepdims, noop_with_empty_axes):
    axes = _ints(axes) if axes is not None else []
    if not axes:
        if noop_with_empty_axes:
            return x
        axes = list(range(x.dim()))
    return fn(x, dim=tuple(_axis(a, x.dim()) for a in axes), keepdim=bool(keepdims))


def reduce_mean(x, axes=None, keepdims=1, noop_with_empty_axes=0):
    return _reduce(torch.mean, x, axes, keepdims, noop_with_empty_axes)


def reduce_sum(x, axes=None, keepdims=1, noop_with_empty_axes=0):
    return _reduce(torch.sum, x, axes, keepdims, noop_with_empty_axes)


def reduce_max(x, axes=None, keepdims=1, noop_with_empty_axes=0):
    return _reduce(torch.amax, x, axes, keepdims, noop_with_empty_axes)


# -- linear algebra (when not a module) ---------------------------------------------------------
def matmul(a, b): return torch.matmul(a, b)


def gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):  # noqa: N803 (ONNX names)
    a = a.t() if transA else a
    b = b.t() if transB else b
    out = alpha * (a @ b)
    return out if c is None else out + beta * c


def conv_pad(x, pads):
    """Asymmetric conv padding, applied before an unpadded nn.Conv2d. `pads` is ONNX order."""
    return F.pad(x, [pads[1], pads[3], pads[0], pads[2]])


def conv_transpose(x, weight, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), output_padding=(0, 0),
                   dilations=(1, 1), group=1):
    """ONNX ConvTranspose (2-D, symmetric pads: onnx_names.normalise_attrs refuses the rest). Not pruned: its
    weights stay the graph's constants."""
    return F.conv_transpose2d(x, weight, bias, stride=tuple(strides), padding=(pads[0], pads[1]),
                              output_padding=tuple(output_padding), groups=group, dilation=tuple(dilations))


def layer_normalization(x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    """Normalised over the dimensions from `axis` on (ConvNeXt / transformer blocks); float32 statistics."""
    return F.layer_norm(x, x.shape[axis:], scale, bias, epsilon)


def instance_normalization(x, scale, bias, epsilon=1e-5):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


# -- activations and resampling added for segmentation-style graphs -----------------------------
def prelu(x, slope):
    return torch.where(x >= 0, x, x * slope)


def log_softmax(x, axis=-1):
    return torch.log_softmax(x, axis)


# ONNX Resize attributes -> F.interpolate settings; combinations not listed have no exact torch twin.
_RESIZE_MODES = {
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("linear", "half_pixel", None): ("bilinear", False),
    ("linear", "pytorch_half_pixel", None): ("bilinear", False),
    ("linear", "align_corners", None): ("bilinear", True),
    ("cubic", "half_pixel", None): ("bicubic", False),
    ("cubic", "align_corners", None): ("bicubic", True),
}


def resize_mode(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor",
                cubic_coeff_a=-0.75, antialias=0, exclude_outside=0, **_):
    """The F.interpolate (mode, align_corners) for these Resize attributes, or None if torch has no twin."""
    if antialias or exclude_outside or (mode == "cubic" and cubic_coeff_a != -0.75):
        return None
    return _RESIZE_MODES.get((mode, coordinate_transformation_mode, nearest_mode if mode == "nearest" else None))


def resize(x, roi=None, scales=None, sizes=None, **attrs):
    torch_mode, align_corners = resize_mode(**attrs)
    size = _ints(sizes) if sizes is not None else []
    if size:
        return F.interpolate(x, size=size[2:], mode=torch_mode, align_corners=align_corners)
    # a list stays a list: a tensor made from it would be data to torch.export, not a constant
    factors = [float(s) for s in (scales.reshape(-1).tolist() if isinstance(scales, torch.Tensor) else scales)]
    if factors[:2] != [1.0, 1.0]:
        raise ValueError("Resize of the batch or channel dimension is not supported")
    return F.interpolate(x, scale_factor=factors[2:], mode=torch_mode, align_corners=align_corners)
