"""The one pipeline: compress -> compile -> measure -> report.

The Celery task and the local CLI both call `run_pipeline`; nothing else strings the stages together.
Artifacts are built in a temporary folder beside `out_dir` and renamed into place at the end, so a
crash or a cancel leaves nothing half-written.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from pathlib import Path

from worker.engine.artifacts import atomic_output_dir
from worker.engine.config import CompressionConfig
from worker.engine.errors import InvalidConfigError
from worker.pipeline_options import PipelineOptions
from worker.progress import Progress

MODEL_ARTIFACTS = ("model.pt2", "model.onnx", "model.pt")


def split_config(config: dict) -> tuple[CompressionConfig, PipelineOptions]:
    """One flat dict (what the API stores) -> engine config + pipeline options; unknown keys are an error."""
    engine_fields = {f.name for f in dataclasses.fields(CompressionConfig)}
    pipeline_fields = {f.name for f in dataclasses.fields(PipelineOptions)}
    unknown = set(config) - engine_fields - pipeline_fields
    if unknown:
        raise InvalidConfigError(f"unknown config option(s): {', '.join(sorted(unknown))}")
    engine = {k: v for k, v in config.items() if k in engine_fields}
    if engine.get("input_shape") is not None:
        engine["input_shape"] = tuple(engine["input_shape"])
    options = PipelineOptions(**{k: v for k, v in config.items() if k in pipeline_fields})
    return CompressionConfig(**engine), options


def run_pipeline(model_path: Path, out_dir: Path, config: dict, progress: Progress, *,
                 cache_dir: Path | None = None, force: bool = False) -> dict:
    """Run every stage on `model_path`, write the artifacts into `out_dir`, return the report.

    A non-empty `out_dir` is refused unless `force`; it is replaced only once the new artifacts are complete.
    `cache_dir` holds synthetic-data and kernel-build caches shared between runs.
    """
    from kernels.allocator import keep_freed_memory

    # The engine's autograd passes free and re-allocate the same large buffers every step; glibc hands them back
    # to the kernel each time. Keeping them: 7-12% faster inversion steps on ResNet-18 at 224x224, a third of the
    # page faults (docs/benchmarks/engine.md, session 11). The compile stage sets the same already.
    keep_freed_memory()
    compression, options = split_config(config)
    started = time.monotonic()
    with atomic_output_dir(Path(out_dir), force=force) as work:
        report = _run_stages(Path(model_path), work, compression, options, progress, cache_dir)
        report["seconds"]["total"] = round(time.monotonic() - started, 3)
        _write_reports(work, report)
    return report


def _run_stages(model_path: Path, work: Path, compression: CompressionConfig, options: PipelineOptions,
                progress: Progress, cache_dir: Path | None) -> dict:
    from worker.engine.run import compress_file

    cache_dir = Path(cache_dir) if cache_dir else None
    report = compress_file(model_path, work, compression, progress, cache_dir=cache_dir)
    report["config"] = {**report["config"], **dataclasses.asdict(options)}  # the engine's config as run
    if options.compile or options.measure:
        from kernels.errors import KernelError

        try:
            _compile_and_measure(work, report, compression, options, progress, cache_dir)
        except KernelError as exc:  # e.g. no C++ compiler on this worker: the pruned model is still delivered
            report.setdefault("warnings", []).append(f"sparse kernels not built, speed not measured: {exc}")
    if (work / "sparse.zip").exists():
        report["sizes"]["sparse_package_bytes"] = (work / "sparse.zip").stat().st_size
    return report


def _compile_and_measure(work: Path, report: dict, compression: CompressionConfig,
                         options: PipelineOptions, progress: Progress, cache_dir: Path | None) -> None:
    import tempfile

    import torch

    import kernels
    from worker.engine.formats import load_model

    # Compile what the user downloads: the saved pruned model, re-read through the same safe loader.
    pruned_path = next(work / name for name in MODEL_ARTIFACTS if (work / name).exists())
    loaded = load_model(pruned_path, input_shape=compression.input_shape)
    example = torch.randn(*report["model"]["input_shape"])
    kernel_cache = cache_dir / "kernels" if cache_dir else None
    with tempfile.TemporaryDirectory(prefix="zerodata-pkg-") as tmp:
        package = Path(tmp) / "sparse"
        t0 = time.monotonic()
        kernels.compile_model(loaded.module, example, package, progress=progress, tune=options.tune,
                              cache_dir=kernel_cache)
        report["seconds"]["compile"] = round(time.monotonic() - t0, 3)
        if options.compile:
            _zip_folder(package, work / "sparse.zip")
        if options.measure:
            t0 = time.monotonic()
            report["speed"] = kernels.benchmark(loaded.module, package, example, runs=options.bench_runs,
                                                progress=progress)
            report["seconds"]["measure"] = round(time.monotonic() - t0, 3)
            slower = slower_than_onnxruntime(report["speed"])
            if slower:
                report.setdefault("warnings", []).append(slower)


def slower_than_onnxruntime(speed: dict) -> str | None:
    """A warning when the compiled package lost to dense ONNX Runtime at batch 1 on this worker: then the
    pruned model itself, served by ONNX Runtime, is the faster choice (small models are bound by per-layer
    call overhead, docs/benchmarks/kernels.md)."""
    from worker.report_html import fastest_runs_speedup_batch1, speedup_batch1  # as the report's speedup card

    ratio = speedup_batch1({"speed": speed})
    if ratio is None or ratio >= 1.0:
        return None
    best = fastest_runs_speedup_batch1({"speed": speed})
    if best is not None and best >= 1.0:  # the medians lost, the fastest runs won: other work shared the cores
        return (f"the compiled sparse package ran {ratio:.2f}x as fast as dense ONNX Runtime at batch 1 by median "
                f"but {best:.2f}x by the fastest runs: the worker was busy while measuring; re-measure with "
                "`zerodata bench` on a quiet machine before choosing a runtime")
    return (f"the compiled sparse package ran {ratio:.2f}x as fast as dense ONNX Runtime at batch 1 on this worker "
            "(slower): serving the pruned model with ONNX Runtime is faster here")


def _zip_folder(folder: Path, zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"sparse/{path.relative_to(folder)}")


def _write_reports(work: Path, report: dict) -> None:
    from worker.report_html import render_report_html

    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (work / "report.html").write_text(render_report_html(report))
