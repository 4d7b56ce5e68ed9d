"""Intake safety: decide whether an uploaded model file may be loaded, without loading it.

Pure: stdlib zipfile/pickletools/json/ast plus the `onnx` protobuf parser. Nothing here imports
torch, unpickles or executes anything from the file. Used by the API (before storing an upload)
and by the engine loader (before `torch.export.load` / `torch.jit.load` / onnxruntime).

What stock loading would otherwise trust, per format (torch 2.13):
- .pt2: `torch.export.load` unpickles `data/sample_inputs/*.pt` with a fallback to
  `weights_only=False`, loads `use_pickle` weights/constants with `weights_only=False`, `pickle.loads`
  opaque constants, resolves graph targets by getattr on `torch`, sympifies (evals) shape strings
  and `exec`s guard code in `.module()`. Every pickle must use only tensor-rebuild globals; the
  graph JSON is held to core ATen ops and arithmetic over shape symbols (see safety/pt2_program.py).
- TorchScript: `torch.jit.load` uses its own C++ unpickler (no Python globals) and compiles code/
  as TorchScript, which can call any registered operator. We limit pickle globals and refuse code
  that calls `from_file` or non-core operator namespaces. Residual risk: TorchScript code runs in
  the worker's process with whatever ATen ops exist; the worker loads it in a limited child process.
- ONNX: parsed, never run here; external data, plugin domains and absurd dims are refused.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import PurePosixPath

from worker.engine.safety import onnx_checks
from worker.engine.safety.errors import (CorruptArchiveError, ModelTooLargeError, UnknownFormatError,
                                         UnsafeModelError, malformed_is_corrupt)
from worker.engine.safety.pickle_scan import evaluate_pickle, tensor_global_allowed, torchscript_global_allowed
from worker.engine.safety.pt2_program import check_exported_program
from worker.engine.safety.summaries import ModelFacts, onnx_facts, pt2_facts, torchscript_class_info, torchscript_facts
from worker.engine.safety.zip_checks import ArchiveLimits, check_zip, open_zip, read_member

__all__ = ["UnsafeModelError", "CorruptArchiveError", "ModelTooLargeError", "UnknownFormatError", "ArchiveLimits",
           "ModelFacts", "check_zip_archive", "check_pt2_archive", "check_onnx_file", "check_torchscript_archive",
           "detect_format", "inspect_model"]

FORMATS = ("pt2", "onnx", "torchscript")
_PT2_FIXED = {"archive_format", "archive_version", "byteorder", "version", ".data/version", ".data/serialization_id"}
_PT2_REFUSED_DIRS = {
    "data/aotinductor/": "AOTInductor native code (a shared library loaded into the process)",
    "data/executorch/": "an ExecuTorch program", "data/mtia": "MTIA device code",
    "xl_model_weights/": "external weight files"}
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_TS_OP_NAMESPACES = {"aten", "prim", "quantized"}


def _label(path) -> str:
    return os.path.basename(os.fspath(path)) or "upload"


def _size(path, label: str) -> int:
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptArchiveError(f"{label}: the file is empty")
    return size


def _single_root(archive: zipfile.ZipFile, label: str) -> str:
    roots = {name.split("/", 1)[0] for name in archive.namelist()}
    if len(roots) != 1 or any("/" not in name for name in archive.namelist()):
        raise UnsafeModelError(f"{label}: members must share one top-level folder (found {sorted(roots)[:5]})")
    return roots.pop() + "/"


def check_zip_archive(path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Container checks only: count, bombs (declared and actual), names, links, encryption, nesting.

    Generic: any nested archive is refused. The format checks below admit the nested torch.save
    payloads a .pt2 carries, because they inspect those themselves."""
    check_zip(os.fspath(path), limits, label=_label(path), archive_bytes=_size(path, _label(path))).close()


def _check_torch_save_payload(data: bytes, label: str, limits: ArchiveLimits, allowed) -> list:
    """A torch.save zip inside the archive: container checks, then every pickle evaluated symbolically."""
    if not data.startswith(b"PK\x03\x04"):
        raise UnsafeModelError(f"{label}: not a zip-format torch.save payload (a raw pickle); refused")
    with check_zip(io.BytesIO(data), limits, label=label, archive_bytes=len(data),
                   raw_members=lambda name: "/data/" in name) as inner:
        root = _single_root(inner, label)
        if root + "data.pkl" not in inner.namelist():
            raise CorruptArchiveError(f"{label}: torch.save payload without data.pkl")
        return [evaluate_pickle(read_member(inner, name, label, limits), label=f"{label}, {name}", allowed=allowed)
                for name in inner.namelist() if name.endswith(".pkl")]


def _load_json(archive, name, label, limits):
    try:
        return json.loads(read_member(archive, name, label, limits))
    except (ValueError, RecursionError) as exc:
        raise CorruptArchiveError(f"{label}: {name} is not valid JSON: {exc}") from None


def _check_payload_config(archive, root, config_name, folder, label, limits) -> set[str]:
    """Weights/constants config: refuse pickled objects, check pickled tensors; returns referenced members."""
    config = _load_json(archive, root + config_name, label, limits)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise CorruptArchiveError(f"{label}: {config_name} has no config mapping")
    referenced = set()
    for fqn, meta in entries.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or not _SIMPLE_NAME.fullmatch(path_name) or path_name.startswith(".."):
            raise UnsafeModelError(f"{label}: {config_name} entry {fqn!r} points at {path_name!r}; refused")
        member = root + folder + path_name
        if path_name.startswith(("custom_obj_", "opaque_obj_")):
            raise UnsafeModelError(
                f"{label}: {fqn!r} is a pickled Python/TorchScript object ({member}); torch.export.load would "
                "unpickle it with no restrictions, so the file is refused")
        if member not in archive.NameToInfo:
            raise CorruptArchiveError(f"{label}: {config_name} entry {fqn!r} refers to missing member {member}")
        if meta.get("use_pickle"):
            # torch.export.load reads these with weights_only=False: only inert tensor pickles pass.
            _check_torch_save_payload(read_member(archive, member, label, limits), f"{label}: member {member}", limits,
                                      tensor_global_allowed)
        elif not isinstance(meta.get("tensor_meta"), dict):
            raise CorruptArchiveError(f"{label}: {config_name} entry {fqn!r} has no tensor metadata")
        referenced.add(member)
    return referenced


def _pt2_program_names(names: list[str], root: str) -> list[str]:
    return [n[len(root) + len("models/"):-len(".json")] for n in names
            if n.startswith(root + "models/") and n.endswith(".json")]


def check_pt2_archive(path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """torch.export archive: zip checks, known layout only, inert pickles only, safe graph JSON."""
    _pt2_check_and_read(path, limits).close()


def _pt2_check_and_read(path, limits: ArchiveLimits, label: str | None = None) -> zipfile.ZipFile:
    label = label or _label(path)
    data_dirs = ("data/weights/", "data/constants/", "data/sample_inputs/")
    archive = check_zip(os.fspath(path), limits, label=label, archive_bytes=_size(path, label),
                        allow_nested=lambda name: any(f"/{d}" in name for d in data_dirs))
    try:
        with malformed_is_corrupt(label, "the .pt2 metadata"):
            _check_pt2_contents(archive, label, limits)
    except BaseException:
        archive.close()
        raise
    return archive


def _check_pt2_contents(archive: zipfile.ZipFile, label: str, limits: ArchiveLimits) -> None:
    root = _single_root(archive, label)
    names = [n for n in archive.namelist() if not n.endswith("/")]
    for name in names:
        for folder, what in _PT2_REFUSED_DIRS.items():
            if name[len(root):].startswith(folder):
                raise UnsafeModelError(f"{label}: member {name} holds {what}; only plain exported programs "
                                       "are accepted")

    def small_text(name: str) -> bytes:
        member = root + name
        return read_member(archive, member, label, limits).strip() if member in archive.NameToInfo else b""

    if small_text("archive_format") != b"pt2":
        raise UnsafeModelError(f"{label}: not a torch.export archive (archive_format is not 'pt2')")
    version = small_text("archive_version")
    if version != b"0":
        raise UnsafeModelError(f"{label}: unsupported .pt2 archive_version {version[:20]!r} (expected 0)")
    programs = _pt2_program_names(names, root)
    if not programs:
        raise CorruptArchiveError(f"{label}: no exported program (models/*.json) in the archive")
    known = {root + n for n in _PT2_FIXED}
    for program in programs:
        if not _SIMPLE_NAME.fullmatch(program):
            raise UnsafeModelError(f"{label}: odd program name {program!r}; refused")
        check_exported_program(_load_json(archive, f"{root}models/{program}.json", label, limits),
                               f"{label}: {root}models/{program}.json")
        for kind in ("weights", "constants"):
            config = f"data/{kind}/{program}_{kind}_config.json"
            if root + config not in archive.NameToInfo:
                raise UnsafeModelError(f"{label}: {config} is missing (legacy or hand-made archive); refused")
            known |= {root + config} | _check_payload_config(archive, root, config, f"data/{kind}/", label, limits)
        sample = f"{root}data/sample_inputs/{program}.pt"
        if sample in archive.NameToInfo:
            # Loaded with weights_only=True, falling back to weights_only=False on failure.
            _check_torch_save_payload(read_member(archive, sample, label, limits), f"{label}: member {sample}",
                                      limits, tensor_global_allowed)
        known |= {sample, f"{root}models/{program}.json"}
    for name in names:
        if name not in known and not name.startswith(root + "extra/"):
            raise UnsafeModelError(f"{label}: unexpected member {name} in a .pt2 archive; refused")


def _check_torchscript_code(archive, name, label, limits) -> str:
    try:
        text = read_member(archive, name, label, limits).decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptArchiveError(f"{label}: TorchScript source {name} is not UTF-8 text") from None
    if re.search(r"\bfrom_file\b", text):
        raise UnsafeModelError(f"{label}: TorchScript code in {name} calls from_file (reads or maps files); refused")
    for namespace in re.findall(r"\bops\.([A-Za-z_]\w*)\.", text):
        if namespace not in _TS_OP_NAMESPACES:
            raise UnsafeModelError(f"{label}: TorchScript code in {name} calls operator namespace {namespace!r}, "
                                   "which is not core PyTorch; refused")
    return text


def check_torchscript_archive(path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """torch.jit archive: zip checks, pickle globals within torch.jit.load's own unpickler, code scan."""
    _torchscript_check_and_read(path, limits)


def _torchscript_check_and_read(path, limits: ArchiveLimits, label: str | None = None):
    label = label or _label(path)
    with check_zip(os.fspath(path), limits, label=label, archive_bytes=_size(path, label),
                   raw_members=lambda name: bool(re.search(r"/(data|constants|traced_inputs)/\d+$", name))) as archive, \
            malformed_is_corrupt(label, "the TorchScript metadata"):
        root = _single_root(archive, label)
        names = archive.namelist()
        if root + "data.pkl" not in names or not any(n.startswith(root + "code/") for n in names):
            raise CorruptArchiveError(f"{label}: not a TorchScript archive (data.pkl and code/ are required)")
        pickles = {n: evaluate_pickle(read_member(archive, n, label, limits), label=f"{label}: member {n}",
                                      allowed=torchscript_global_allowed)
                   for n in names if n.endswith((".pkl", ".debug_pkl"))}
        code = {n: _check_torchscript_code(archive, n, label, limits)
                for n in names if n.startswith(root + "code/") and n.endswith(".py")}
    return root, pickles, code


def check_onnx_file(path, max_bytes: int) -> None:
    """ONNX protobuf: size cap, no external data, no plugin domains, sane dims, passes onnx.checker."""
    onnx_checks.check_onnx_model(path, max_bytes, _label(path))


def detect_format(path, label: str | None = None) -> str:
    """'pt2' | 'onnx' | 'torchscript' from the bytes (never the file name); UnknownFormatError otherwise."""
    label = label or _label(path)
    _size(path, label)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        with open_zip(os.fspath(path), label) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
        parts = [PurePosixPath(n).parts for n in names]
        inner = {"/".join(p[1:]) for p in parts if len(p) > 1}
        if "archive_format" in inner or any(n.startswith("models/") for n in inner):
            return "pt2"
        if "data.pkl" in inner and any(n.startswith("code/") for n in inner):
            return "torchscript"
        if "data.pkl" in inner:
            raise UnknownFormatError(f"{label}: a torch.save checkpoint (pickled objects, e.g. a state dict) is not "
                                     "a model format we load; export with torch.export.save, ONNX or TorchScript")
        raise UnknownFormatError(f"{label}: a zip archive that is neither a .pt2 export nor TorchScript")
    if onnx_checks.looks_like_onnx(path):
        return "onnx"
    raise UnknownFormatError(f"{label}: unknown format ({_describe_bytes(head)}); upload a torch.export .pt2, "
                             "an ONNX model or a TorchScript archive")


def _describe_bytes(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head[:1] == b"\x80" or head.startswith(b"\x8a\x0a"):
        return "a raw pickle; pickles are never loaded"
    if len(head) >= 9 and head[8:9] == b"{":
        return "looks like a safetensors weights file, which holds no graph"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z")):
        return "a compressed archive"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def inspect_model(path, *, max_bytes: int, limits: ArchiveLimits = ArchiveLimits(),
                  label: str | None = None) -> ModelFacts:
    """Detect, check and summarise in one pass; raises an UnsafeModelError subclass on refusal.
    `label` names the file in messages (default: its base name)."""
    label = label or _label(path)
    size = os.path.getsize(path)
    if size == 0:
        raise CorruptArchiveError(f"{label}: the file is empty")
    if size > max_bytes:
        raise ModelTooLargeError(f"{label}: {size} bytes is more than the limit of {max_bytes}")
    fmt = detect_format(path, label)
    if fmt == "onnx":
        model = onnx_checks.check_onnx_model(path, max_bytes, label)
        with malformed_is_corrupt(label, "the ONNX graph"):
            return onnx_facts(model)
    if fmt == "pt2":
        with _pt2_check_and_read(path, limits, label) as archive:
            root = _single_root(archive, label)
            programs = _pt2_program_names(archive.namelist(), root)
            program = "model" if "model" in programs else programs[0]
            with malformed_is_corrupt(label, "the .pt2 metadata"):
                facts = pt2_facts(_load_json(archive, f"{root}models/{program}.json", label, limits),
                                  _load_json(archive, f"{root}data/weights/{program}_weights_config.json", label,
                                             limits))
            if len(programs) > 1:
                facts.warnings.append(f"the archive holds {len(programs)} programs; only {program!r} is used")
            return facts
    root, pickles, code = _torchscript_check_and_read(path, limits, label)
    with malformed_is_corrupt(label, "the TorchScript metadata"):
        return torchscript_facts(pickles[root + "data.pkl"], torchscript_class_info(code),
                                 pickles.get(root + "traced_inputs.pkl"))
