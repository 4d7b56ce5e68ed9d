"""ONNX checks: parse the protobuf (never run it), refuse external data, plugin domains, absurd dims."""
from __future__ import annotations

import os
from pathlib import PurePosixPath, PureWindowsPath
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError

from worker.engine.safety.errors import CorruptArchiveError, ModelTooLargeError, UnsafeModelError

# Operator domains ONNX Runtime implements itself; anything else needs a custom-op plugin library.
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"}
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_DIM = 1 << 31
# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_ITEM_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.FLOAT16: 2,
               onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
               onnx.TensorProto.INT16: 2, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1,
               onnx.TensorProto.UINT16: 2, onnx.TensorProto.UINT32: 4, onnx.TensorProto.UINT64: 8,
               onnx.TensorProto.BOOL: 1}


def _read_varint(handle, limit: int) -> int | None:
    value, shift = 0, 0
    for _ in range(10):
        if handle.tell() >= limit:
            return None
        byte = handle.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    return None


def model_fields(path: str | os.PathLike) -> tuple[list[int], bool]:
    """Walk the top-level protobuf fields of a would-be ModelProto without parsing the graph.

    Returns (field numbers in order, reached_end_cleanly); stops at the first field that is not a
    ModelProto field or that runs past the end of the file."""
    size = os.path.getsize(path)
    found: list[int] = []
    with open(path, "rb") as handle:
        while handle.tell() < size:
            tag = _read_varint(handle, size)
            if tag is None or _MODEL_FIELDS.get(tag >> 3) != (tag & 7):
                return found, False
            if tag & 7 == 0:
                if _read_varint(handle, size) is None:
                    return found, False
            else:
                length = _read_varint(handle, size)
                if length is None or handle.tell() + length > size:
                    return found, False
                handle.seek(length, os.SEEK_CUR)
            found.append(tag >> 3)
    return found, True


def looks_like_onnx(path: str | os.PathLike) -> bool:
    """ONNX writers put ir_version (field 1) first, then other ModelProto fields."""
    fields, _ = model_fields(path)
    if len(fields) < 2 or fields[0] != 1:
        return False
    with open(path, "rb") as handle:
        head = handle.read(3)
    return 1 <= head[1] <= 64 if len(head) > 1 and head[0] == 0x08 else False


def _graphs(graph: onnx.GraphProto, where: str) -> Iterator[tuple[onnx.GraphProto, str]]:
    pending = [(graph, where)]
    while pending:
        current, place = pending.pop()
        yield current, place
        for node in current.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    pending.append((attr.g, f"{place}/{node.name or node.op_type}.{attr.name}"))
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    pending.extend((g, f"{place}/{node.name or node.op_type}.{attr.name}") for g in attr.graphs)


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == onnx.AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices


def _check_tensor(tensor: onnx.TensorProto, label: str) -> None:
    external = {entry.key: entry.value for entry in tensor.external_data}
    if tensor.data_location == onnx.TensorProto.EXTERNAL or external:
        location = external.get("location", "")
        if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
            why = "an absolute path"
        elif ".." in PurePosixPath(location.replace("\\", "/")).parts:
            why = "a path outside the upload"
        else:
            why = "a separate file, which an upload cannot carry"
        raise UnsafeModelError(
            f"{label}: tensor {tensor.name!r} keeps its data in external file {location!r} ({why}); "
            "external data is refused: save the model with all tensors inside the .onnx file "
            "(torch.onnx.export(..., external_data=False), or onnx.save(onnx.load('model.onnx'), "
            "'model_single.onnx')); the zerodata CLI's compress, compile, bench and submit inline a data file "
            "that sits next to the model themselves")
    elements = 1
    for dim in tensor.dims:
        if dim < 0:
            raise UnsafeModelError(f"{label}: tensor {tensor.name!r} has a negative dimension {dim}; refused")
        elements *= dim
    if elements > MAX_TENSOR_ELEMENTS:
        raise UnsafeModelError(f"{label}: tensor {tensor.name!r} declares {elements} elements; absurd dims refused")
    item = _ITEM_BYTES.get(tensor.data_type)
    if tensor.raw_data and item and len(tensor.raw_data) != elements * item:
        raise CorruptArchiveError(
            f"{label}: tensor {tensor.name!r} holds {len(tensor.raw_data)} bytes, its dims say {elements * item}")


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of the model: initializers and node attributes in every graph, subgraph and function."""
    roots = [model.graph, *(g for info in model.training_info for g in (info.initialization, info.algorithm))]
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node)
            for attr in node.attribute:
                roots += [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    for root in roots:
        for graph, _ in _graphs(root, ""):
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            for node in graph.node:
                yield from _attribute_tensors(node)


def _check_value_infos(graph: onnx.GraphProto, label: str) -> None:
    for info in (*graph.input, *graph.output, *graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and not 0 <= dim.dim_value <= MAX_DIM:
                raise UnsafeModelError(f"{label}: {info.name!r} has absurd dimension {dim.dim_value}; refused")


def _check_nodes(nodes, allowed_ops: set[tuple[str, str]], label: str, where: str) -> None:
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in allowed_ops:
            raise UnsafeModelError(
                f"{label}: node {node.name or node.op_type!r} in {where} uses custom operator "
                f"{node.domain}::{node.op_type}, which needs a plugin library; refused")


def check_onnx_model(path: str | os.PathLike, max_bytes: int, label: str) -> onnx.ModelProto:
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptArchiveError(f"{label}: the file is empty")
    if size > max_bytes:
        raise ModelTooLargeError(f"{label}: {size} bytes is more than the limit of {max_bytes}")
    fields, clean = model_fields(path)
    if not clean:
        raise CorruptArchiveError(f"{label}: ONNX protobuf is truncated or corrupt")
    if 7 not in fields:
        raise CorruptArchiveError(f"{label}: ONNX file has no graph")
    try:
        model = onnx.load_model(os.fspath(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise CorruptArchiveError(f"{label}: ONNX protobuf does not parse: {exc}") from None
    local_functions = {(f.domain, f.name) for f in model.functions}
    for opset in model.opset_import:
        if opset.domain not in STANDARD_DOMAINS and opset.domain not in {d for d, _ in local_functions}:
            raise UnsafeModelError(f"{label}: model imports operator domain {opset.domain!r}, which needs a "
                                   "custom-op plugin library; refused")
    roots = [(model.graph, "graph")]
    roots += [(g, f"training_info[{i}]") for i, info in enumerate(model.training_info)
              for g in (info.initialization, info.algorithm)]
    for tensor in all_tensors(model):
        _check_tensor(tensor, label)
    for root, where in roots:
        for graph, place in _graphs(root, where):
            _check_value_infos(graph, label)
            _check_nodes(graph.node, local_functions, label, place)
    for function in model.functions:
        _check_nodes(function.node, local_functions, label, f"function {function.domain}::{function.name}")
        for node in function.node:
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    for graph, place in _graphs(sub, f"function {function.name}"):
                        _check_nodes(graph.node, local_functions, label, place)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise CorruptArchiveError(f"{label}: ONNX model is invalid: {str(exc).splitlines()[0][:300]}") from None
    return model
