"""Small helpers of the ONNX converter: attribute decoding, per-op attribute checks, and names
(torch.onnx scope names -> module paths, ONNX value names -> Python identifiers)."""
from __future__ import annotations

import keyword
import re

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import numpy_helper

from worker.engine.errors import UnsupportedModelError
from worker.engine.formats import onnx_ops as ops


def normalise_attrs(op_type: str, attrs: dict, where: str, opset: int) -> dict:
    if op_type in ("AveragePool", "MaxPool"):
        if attrs.pop("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise UnsupportedModelError(f"{op_type} {where}: auto_pad SAME_* is not supported")
        attrs.pop("storage_order", None)
        kernel = attrs.get("kernel_shape", [])
        if len(kernel) != 2:
            raise UnsupportedModelError(f"{op_type} {where} is {len(kernel)}-D; zerodata handles 2-D pooling")
        pads = attrs.get("pads", [0, 0, 0, 0])
        if op_type == "AveragePool":
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise UnsupportedModelError(f"AveragePool {where} has asymmetric padding, which is not supported")
            if any(d != 1 for d in attrs.pop("dilations", [1, 1])):
                raise UnsupportedModelError(f"AveragePool {where} is dilated, which is not supported")
    if op_type == "Softmax":
        attrs.setdefault("axis", -1 if opset >= 13 else 1)
        attrs["_opset"] = opset
    if op_type == "Dropout":
        attrs = {}
    if op_type == "Resize" and opset < 11:
        raise UnsupportedModelError(f"Resize {where} is from opset {opset}; export with opset 11 or newer")
    if op_type == "Resize" and ops.resize_mode(**attrs) is None:
        raise UnsupportedModelError(f"Resize {where} with {attrs} has no exact torch equivalent; supported: "
                                    "nearest (asymmetric, floor), linear and cubic (half_pixel or align_corners)")
    if op_type == "ConvTranspose":
        attrs = _conv_transpose_attrs(attrs, where)
    if op_type == "LayerNormalization" and attrs.get("stash_type", 1) != 1:
        raise UnsupportedModelError(f"LayerNormalization {where} keeps its statistics in another precision "
                                    f"(stash_type={attrs['stash_type']}); only float32 is supported")
    if op_type == "LogSoftmax":
        attrs.setdefault("axis", -1 if opset >= 13 else 1)
    return attrs


def _conv_transpose_attrs(attrs: dict, where: str) -> dict:
    """What ops.conv_transpose takes; output_shape, SAME_* and asymmetric pads have no F.conv_transpose2d twin."""
    auto_pad = attrs.pop("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID") or "output_shape" in attrs:
        raise UnsupportedModelError(f"ConvTranspose {where}: auto_pad={auto_pad} / output_shape is not supported; "
                                    "export with explicit pads")
    if len(attrs.pop("kernel_shape", [0, 0])) != 2:
        raise UnsupportedModelError(f"ConvTranspose {where} is not 2-D; zerodata handles 2-D convolutions")
    pads = [0, 0, 0, 0] if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise UnsupportedModelError(f"ConvTranspose {where} has asymmetric pads {pads}, which is not supported")
    return {**attrs, "pads": pads}


def scope_path(node_name: str) -> str | None:
    """'/layer1/layer1.0/conv1/Conv' (torch.onnx scope names) -> 'layer1.0.conv1'."""
    if not node_name.startswith("/"):
        return None
    segments = [s for s in node_name.strip("/").split("/")[:-1] if s]
    path = ""
    for seg in segments:
        path = seg if (not path or seg.startswith(path + ".")) else f"{path}.{seg}"
    return path or None


def attribute_value(attr: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return to_torch(numpy_helper.to_array(value))
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


# float16 / bfloat16 ONNX element types: the importer computes in float32 (the saver writes tensors back in
# the dtype they were stored in).
HALF_ELEM_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def is_half(array: np.ndarray) -> bool:
    return array.dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A copy as a torch tensor; half-precision arrays become float32 (torch cannot take numpy's bfloat16)."""
    return torch.from_numpy(np.array(array, dtype=np.float32 if is_half(array) else None, copy=True))


def numpy_dtype(tensor: torch.Tensor):
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


def identifier(name: str, fallback: str) -> str:
    cleaned = re.sub(r"\W", "_", name).strip("_") or fallback
    return f"{fallback}_{cleaned}" if cleaned[0].isdigit() or keyword.iskeyword(cleaned) else cleaned
