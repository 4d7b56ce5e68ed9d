"""Load and save the model formats users upload: torch.export `.pt2`, ONNX, TorchScript.

`load_model` gives a `LoadedModel` whose `.module` is an eval-mode torch module in which every
conv is an `nn.Conv2d`, every BatchNorm an `nn.BatchNorm2d` and every linear layer an `nn.Linear`;
`save_model` writes the pruned module back in the same format with the same input/output signature.
The format is told from the file's content, never its name; archive_safety checks every file before
any loader touches it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from worker.engine import archive_safety
from worker.engine.errors import CorruptModelError
from worker.engine.formats.model import EXTENSIONS, LoadedModel, ModelFormat
from worker.engine.formats.precision import half_tensors, precision_warning, to_float32
from worker.engine.formats.zip_deflate import deflate_archive

__all__ = ["LoadedModel", "ModelFormat", "EXTENSIONS", "detect_format", "load_model", "save_model"]


def detect_format(path: Path) -> ModelFormat:
    """From the file's bytes, never its name (the intake helper's sniffing, one copy for both sides)."""
    path = Path(path)
    if not path.is_file():
        raise CorruptModelError(f"model file {path.name!r} does not exist")
    return archive_safety.detect_format(path)


def load_model(path: Path, *, input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """`input_shape` (N,C,H,W) is needed only by formats that declare none (TorchScript)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "pt2":
        from worker.engine.formats.pt2 import load_pt2
        loaded = load_pt2(path)
    elif fmt == "onnx":
        from worker.engine.formats.onnx_import import load_onnx
        loaded = load_onnx(path)
    else:
        from worker.engine.formats.torchscript import load_torchscript
        loaded = load_torchscript(path, input_shape)
    loaded.module.eval()
    loaded.stored_dtypes = half_tensors(loaded.module)
    if loaded.stored_dtypes:
        to_float32(loaded.module)
        names = {str(d).removeprefix("torch.") for d in loaded.stored_dtypes.values()}
        loaded.warnings.append(precision_warning(names, len(loaded.stored_dtypes)))
    return loaded


def save_model(loaded: LoadedModel, module: torch.nn.Module, path: Path,
               *, input_shape: tuple[int, ...] | None = None) -> None:
    """Write `module` (loaded.module after pruning: same names and structure) in loaded's format."""
    path = Path(path)
    module = module.to("cpu").eval()
    if loaded.format == "onnx":
        from worker.engine.formats.onnx_export import save_onnx
        save_onnx(loaded, module, path)
        return
    if loaded.format == "pt2":
        from worker.engine.formats.pt2 import save_pt2
        save_pt2(loaded, module, path, input_shape=input_shape)
    else:
        from worker.engine.formats.torchscript import save_torchscript
        save_torchscript(loaded, module, path)
    deflate_archive(path)  # the pruned zeros compress; torch itself writes every member stored
