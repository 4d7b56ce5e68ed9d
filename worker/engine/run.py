"""The engine's file-level entry point: model file in, output folder out.

    load -> validate -> compress_module -> out_dir/{model.<ext>, masks.safetensors, report.json}

The service's pipeline and `zerodata compress` both call `compress_file`. Everything is written
into a temporary folder beside `out_dir` and renamed at the end, so a failed run leaves nothing.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from worker.engine import artifacts
from worker.engine.config import CompressionConfig
from worker.engine.formats import LoadedModel, load_model, save_model
from worker.engine.validation import resolve_input_shape, validate_config, validate_model
from worker.progress import Progress


def compress_file(model_path: Path, out_dir: Path, config: CompressionConfig, progress: Progress,
                  *, force: bool = False, cache_dir: Path | None = None) -> dict:
    """Compress one model file; returns the report dict also written to out_dir/report.json."""
    started = time.monotonic()
    model_path = Path(model_path)
    validate_config(config)
    with artifacts.atomic_output_dir(Path(out_dir), force=force) as work:
        progress.update("load", 0, 1, model_path.name)
        loaded = load_model(model_path, input_shape=config.input_shape)
        input_shape = resolve_input_shape(loaded, config)
        validate_model(loaded, input_shape, config)
        progress.update("load", 1, 1, f"{loaded.format}, input {list(input_shape)}")
        progress.check_cancelled()

        from worker.engine.compress import compress_module  # heavy; after the cheap checks

        compress_started = time.monotonic()
        result = compress_module(loaded.module, input_shape, config, progress, cache_dir=cache_dir)
        compress_seconds = time.monotonic() - compress_started

        progress.update("save", 0, 3, "model")
        model_out = work / f"{artifacts.MODEL_STEM}{loaded.extension}"
        save_model(loaded, result.module, model_out, input_shape=input_shape)
        progress.update("save", 1, 3, "masks")
        masks_out = work / artifacts.MASKS_FILE
        library = result.report.get("pattern_library", [])
        artifacts.write_masks(result.masks, masks_out, entries=config.entries,
                              library_size=len(library) or config.library_size, pattern_library=library,
                              source_names=source_tensor_names(loaded))
        progress.update("save", 2, 3, "report")
        report = build_report(loaded, model_path, input_shape, config, result, model_out, masks_out,
                              compress_seconds, time.monotonic() - started)
        artifacts.write_report(report, work / artifacts.REPORT_FILE)
        progress.update("save", 3, 3, str(out_dir))
    return report


def build_report(loaded: LoadedModel, model_path: Path, input_shape, config: CompressionConfig, result,
                 model_out: Path, masks_out: Path, compress_seconds: float, total_seconds: float) -> dict:
    """report.json (docs/report-schema.md): the sections this stage produces; later stages add theirs."""
    params = sum(p.numel() for p in loaded.module.parameters())
    warnings = list(loaded.warnings) + [str(w) for w in result.report.get("warnings", [])]
    fallback = (result.report.get("synthetic") or {}).get("fallback")
    if fallback:
        warnings.append(str(fallback))
    if (result.report.get("synthesis_budget") or {}).get("warning"):
        warnings.append(str(result.report["synthesis_budget"]["warning"]))
    if result.fidelity.get("warning"):
        warnings.append(str(result.fidelity["warning"]))
    return {
        "zerodata_version": _version(),
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {"format": loaded.format, "sha256": artifacts.sha256_file(model_path),
                  "input_shape": list(input_shape), "params": params, "bytes": model_path.stat().st_size},
        "config": result.config.to_dict(),  # automatic choices resolved
        "compression": result.report,
        "fidelity": result.fidelity,
        "sizes": {"model_bytes_before": model_path.stat().st_size, "model_bytes_after": model_out.stat().st_size,
                  "masks_bytes": masks_out.stat().st_size},
        "seconds": {"compress": round(compress_seconds, 3), "total": round(total_seconds, 3)},
        "warnings": warnings,
    }


def source_tensor_names(loaded: LoadedModel) -> dict[str, str]:
    """Parameter name -> name in the saved file, where they differ (ONNX initializers)."""
    if loaded.format != "onnx":
        return {}
    return {name: source.name for name, source in loaded.save_state.items() if source.kind != "computed"}


def _version() -> str:
    try:
        return metadata.version("zerodata")
    except metadata.PackageNotFoundError:
        return "0.1.0"
