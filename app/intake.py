"""Intake of an uploaded model in the API process: detect the format from the bytes, run the safety
checks and summarise the model, all without importing torch, unpickling or executing anything.

The checks themselves live in `worker.engine.archive_safety` (pure), so the worker's loader runs
exactly the same ones before it really loads the file in a limited child process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from worker.engine.archive_safety import (ModelTooLargeError, UnknownFormatError, UnsafeModelError, detect_format,
                                          inspect_model)

log = logging.getLogger(__name__)
UPLOAD_LABEL = "upload"


class IntakeError(Exception):
    """A refused upload: 400 malformed or unsafe, 413 too large, 415 unknown format."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class ModelSummary:
    format: str  # "pt2" | "onnx" | "torchscript"
    params: int | None
    prunable_layers: list[str]  # 3x3 convolutions with groups=1, in model order
    input_shape: list[int] | None  # N x C x H x W with batch 1; None when the model does not say
    warnings: list[str] = field(default_factory=list)


def _as_intake_error(exc: UnsafeModelError) -> IntakeError:
    if isinstance(exc, ModelTooLargeError):
        return IntakeError(413, str(exc))
    if isinstance(exc, UnknownFormatError):
        return IntakeError(415, str(exc))
    return IntakeError(400, str(exc))


def sniff_format(path: Path) -> str:
    """'pt2', 'onnx' or 'torchscript', judged from the content only (the file name is ignored)."""
    try:
        return detect_format(path, UPLOAD_LABEL)
    except UnsafeModelError as exc:
        raise _as_intake_error(exc) from None
    except OSError as exc:
        raise IntakeError(400, f"{UPLOAD_LABEL}: unreadable: {exc.strerror}") from None


def inspect_upload(path: Path, *, max_bytes: int) -> ModelSummary:
    """Run every intake check and build the summary; raises IntakeError on refusal."""
    try:
        facts = inspect_model(path, max_bytes=max_bytes, label=UPLOAD_LABEL)
    except UnsafeModelError as exc:
        raise _as_intake_error(exc) from None
    except OSError as exc:
        raise IntakeError(400, f"{UPLOAD_LABEL}: unreadable: {exc.strerror}") from None
    except Exception as exc:  # fail closed: a file the checks cannot handle is not accepted
        log.exception("intake check crashed on %s", path)
        raise IntakeError(400, f"{UPLOAD_LABEL}: the file could not be checked ({type(exc).__name__}); "
                               "refused") from None
    warnings = list(facts.warnings)
    if not facts.conv3x3_layers:
        warnings.append("no 3x3 convolutions with groups=1: pattern pruning has nothing to prune in this model")
    return ModelSummary(format=facts.format, params=facts.params, prunable_layers=list(facts.conv3x3_layers),
                        input_shape=facts.input_shape, warnings=warnings)
