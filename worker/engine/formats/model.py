"""The in-memory model every format loads into, and what each format keeps to save it back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

ModelFormat = Literal["pt2", "onnx", "torchscript"]
EXTENSIONS: dict[str, str] = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class LoadedModel:
    module: torch.nn.Module
    """Eval mode; every conv an `nn.Conv2d`, every BN an `nn.BatchNorm2d`, every linear an `nn.Linear`."""
    format: ModelFormat
    input_shape: tuple[int, ...] | None
    """N,C,H,W the model declares (N=1 when the batch is dynamic); None if it declares none."""
    source_path: Path
    warnings: list[str] = field(default_factory=list)
    """Things the user should know (layers left functional, ...); surfaced in report.json."""
    save_state: Any = None
    """Format-private: what the saver needs besides the pruned module."""
    stored_dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    """state_dict name -> dtype of each half-precision tensor of the upload (the module holds them as float32)."""

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]
