"""The files a compression run leaves in its output folder, and the atomic folder they are written in.

- `model.<ext>`        the pruned model, same format as the input (formats.save_model)
- `masks.safetensors`  parameter name -> bool mask (True = kept) for every pruned parameter, with the
                       pattern library in the metadata, so the kernel compiler needs nothing else
- `report.json`        docs/report-schema.md
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from worker.engine.errors import EngineError

MASKS_FILE, REPORT_FILE, MODEL_STEM = "masks.safetensors", "report.json", "model"
MASKS_FORMAT = "zerodata-masks-1"


class OutputExistsError(EngineError):
    """The output folder already holds files and overwriting was not asked for."""


def write_masks(masks: dict[str, torch.Tensor], path: Path, *, entries: int, library_size: int,
                pattern_library: list[list[int]], source_names: dict[str, str] | None = None) -> None:
    """`source_names` maps a parameter name to the tensor's name in the saved file when they differ
    (ONNX initializers such as 'onnx::Conv_274')."""
    tensors = {name: mask.detach().to("cpu", torch.bool).contiguous() for name, mask in masks.items()}
    metadata = {"format": MASKS_FORMAT, "entries": str(entries), "library_size": str(library_size),
                "pattern_library": json.dumps(pattern_library)}
    if source_names:
        metadata["source_names"] = json.dumps({k: v for k, v in source_names.items() if k in tensors})
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o644)


def read_masks(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Masks and metadata (entries, library_size as ints, pattern_library as lists)."""
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    metadata = {"format": raw.get("format"), "entries": int(raw["entries"]),
                "library_size": int(raw["library_size"]), "pattern_library": json.loads(raw["pattern_library"]),
                "source_names": json.loads(raw.get("source_names", "{}"))}
    return load_file(str(path)), metadata


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output_dir(out_dir: Path, *, force: bool = False):
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir` in one rename,
    on any error it is deleted and `out_dir` is left exactly as it was."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output path {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputExistsError(f"output folder {out_dir} is not empty; choose another or overwrite with --force")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "previous")
    try:
        os.replace(work, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out_dir)
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    os.chmod(out_dir, 0o755)


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"report value of type {type(value).__name__} is not JSON-serialisable")
