"""ONNX models whose tensors live in a side file (torch.onnx.export's default since torch 2.6 writes
`model.onnx` + `model.onnx.data`), made into one self-contained .onnx for the local CLI.

Only for files on the user's own disk: an upload is one file, and a worker must never follow a location an
untrusted model names (it could point at another job's upload), so the service keeps refusing external data
(safety/onnx_checks.py). Here every location must be a plain file name beside the model, a regular file (no
symlink), and each (offset, length) must lie inside it; the bytes are copied into the tensors and the result is
written to `dest`, which then goes through the same checks as any upload.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from worker.engine.safety.errors import ModelTooLargeError, UnsafeModelError
from worker.engine.safety.onnx_checks import all_tensors


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data]


def has_external_data(path: Path) -> bool:
    """Whether the ONNX file at `path` keeps any tensor's bytes in another file (parses, never loads data)."""
    return bool(external_tensors(onnx.load_model(os.fspath(path), load_external_data=False)))


def inline_external_data(path: Path, dest: Path, max_bytes: int) -> int:
    """Write `path` with every external tensor's bytes inlined to `dest`; returns how many tensors moved."""
    path = Path(path)
    model = onnx.load_model(os.fspath(path), load_external_data=False)
    tensors = external_tensors(model)
    total = path.stat().st_size
    for tensor in tensors:
        data = _read_side_file(path, tensor)
        total += len(data)
        if total > max_bytes:
            raise ModelTooLargeError(f"{path.name}: with its external data the model is more than the limit of "
                                     f"{max_bytes} bytes")
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    onnx.save_model(model, os.fspath(dest))
    return len(tensors)


def _read_side_file(path: Path, tensor: onnx.TensorProto) -> bytes:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    where = f"{path.name}: tensor {tensor.name!r}"
    if not location or location in (".", "..") or any(c in location for c in "/\\\0") or ":" in location:
        raise UnsafeModelError(f"{where} names external file {location!r}; only a plain file name next to the "
                               "model is followed")
    side = path.parent / location
    if side.is_symlink() or not side.is_file():
        raise UnsafeModelError(f"{where} keeps its data in {location!r}, which is not a regular file next to "
                               f"{path.name}; copy it there (not a symlink)")
    try:
        offset, length = int(info.get("offset", 0)), info.get("length")
        size = side.stat().st_size
        length = size - offset if length is None else int(length)
    except ValueError:
        raise UnsafeModelError(f"{where}: external data offset/length are not integers") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise UnsafeModelError(f"{where}: bytes {offset}..{offset + length} lie outside {location!r} "
                               f"({size} bytes); is it the data file that belongs to this model?")
    with side.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)
