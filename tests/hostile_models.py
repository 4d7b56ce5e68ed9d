"""Hostile and broken model files for the intake-safety tests, built on the fly (no committed binaries).

Every payload here is ours and harmless (it creates a marker file); tests assert it never runs.
Pickles that name dangerous globals are written opcode by opcode and never unpickled.
"""
from __future__ import annotations

import io
import json
import pickle
import stat
import struct
import zipfile
from pathlib import Path

import onnx
from benchmarks.shared_assets import SHARED_MODELS  # noqa: F401 (re-exported to the intake tests)



class CreatesMarker:
    """Unpickling this opens (creates) `marker` for writing: the stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def global_call_pickle(module: str, name: str, argument: str, protocol: int = 2) -> bytes:
    """`module.name(argument)` as a pickle, written by hand (GLOBAL or STACK_GLOBAL), never executed."""
    encoded = argument.encode()
    text = b"X" + struct.pack("<I", len(encoded)) + encoded
    if protocol >= 4:
        header = b"\x80\x04"
        callee = (b"\x8c" + bytes([len(module)]) + module.encode()
                  + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93")  # SHORT_BINUNICODE x2, STACK_GLOBAL
    else:
        header = b"\x80\x02"
        callee = b"c" + f"{module}\n{name}\n".encode()
    return header + callee + text + b"\x85R."  # TUPLE1, REDUCE, STOP


def torch_save_zip(data_pkl: bytes, root: str = "archive") -> bytes:
    """A torch.save-format zip whose data.pkl is `data_pkl` (the layout torch.load reads)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{root}/data.pkl", data_pkl)
        archive.writestr(f"{root}/byteorder", "little")
        archive.writestr(f"{root}/version", "3\n")
        archive.writestr(f"{root}/.data/serialization_id", "0" * 40)
    return buffer.getvalue()


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None] | None = None,
                add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip member by member; `replace` maps a name suffix to new bytes (None drops it)."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, "w") as target:
        root = source.namelist()[0].split("/", 1)[0]
        for info in source.infolist():
            inner = info.filename.split("/", 1)[1]
            if inner in replace:
                if replace[inner] is not None:
                    target.writestr(info.filename, replace[inner])
            else:
                target.writestr(info.filename, source.read(info))
        for inner, data in add.items():
            target.writestr(f"{root}/{inner}", data)
    return dst


def read_member(path: Path, inner: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        return archive.read(f"{root}/{inner}")


def pt2_with_pickled_weight(clean: Path, dst: Path, payload: bytes) -> Path:
    """Mark weight_0 as `use_pickle` (torch.export.load then uses torch.load(weights_only=False))."""
    config = json.loads(read_member(clean, "data/weights/model_weights_config.json"))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    path_name = config["config"][first]["path_name"]
    return rewrite_zip(clean, dst, replace={"data/weights/model_weights_config.json": json.dumps(config).encode(),
                                            f"data/weights/{path_name}": payload})


def pt2_with_program_edit(clean: Path, dst: Path, edit) -> Path:
    program = json.loads(read_member(clean, "models/model.json"))
    edit(program)
    return rewrite_zip(clean, dst, replace={"models/model.json": json.dumps(program).encode()})


def zip_with(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def zip_with_info(path: Path, info: zipfile.ZipInfo, data: bytes, base: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, member in (base or {}).items():
            archive.writestr(name, member)
        archive.writestr(info, data)
    return path


def set_encrypted_flag(path: Path) -> Path:
    """Python's zipfile cannot write encrypted members: set the flag in the headers by hand."""
    raw = bytearray(path.read_bytes())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    raw[local + 6] |= 0x1
    raw[central + 8] |= 0x1
    path.write_bytes(bytes(raw))
    return path


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def onnx_with_external_data(clean: Path, dst: Path, location: str) -> Path:
    model = onnx.load(clean, load_external_data=False)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4096")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    dst.write_bytes(model.SerializeToString())
    return dst


def onnx_edit(clean: Path, dst: Path, edit) -> Path:
    model = onnx.load(clean, load_external_data=False)
    edit(model)
    dst.write_bytes(model.SerializeToString())
    return dst


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(CreatesMarker(marker), protocol=2)
