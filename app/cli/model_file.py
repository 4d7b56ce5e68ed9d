"""The model file a CLI command was given, as one self-contained file."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click


@contextmanager
def self_contained(model: Path) -> Iterator[Path]:
    """`model` itself, or, for an ONNX model that keeps its tensors in a side file (`torch.onnx.export`'s
    default writes model.onnx + model.onnx.data), a temporary copy with them inlined: uploads are one file and
    the engine never follows external data, but on the user's own disk the side file is theirs to read."""
    from google.protobuf.message import DecodeError

    from worker.engine.errors import EngineError
    from worker.engine.formats import detect_format
    from worker.engine.formats.onnx_external import has_external_data, inline_external_data
    from worker.engine.formats.onnx_import import MAX_ONNX_BYTES

    try:
        external = detect_format(model) == "onnx" and has_external_data(model)
    except (EngineError, OSError, DecodeError, ValueError):  # the command's own loader reports these properly
        external = False
    if not external:
        yield model
        return
    with tempfile.TemporaryDirectory(prefix="zerodata-onnx-") as tmp:
        inlined = Path(tmp) / model.name
        try:
            count = inline_external_data(model, inlined, MAX_ONNX_BYTES)
        except EngineError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"note: {model.name}: {count} tensors read from the external data file beside it "
                   "and inlined into one .onnx", err=True)
        yield inlined
