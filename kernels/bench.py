"""benchmark(): the "speed" section of report.json. Dense torch eager, dense ONNX Runtime and the
compiled package, timed side by side in one process with the same thread count, interleaved."""
from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
from pathlib import Path

import torch

from kernels import package as pkg
from kernels.autotune import relative_error, time_samples
from kernels.graph import eval_module


class _Silent:
    def update(self, stage, done, total, detail=""):
        pass

    def check_cancelled(self):
        pass


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """The exporter logs a warning per torchvision op it cannot register; torchvision is deliberately absent."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def ort_baseline_options(threads: int | None = None):
    """Session options of every dense ONNX Runtime baseline: torch's thread count, sequential, all graph
    optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle ORT workers otherwise spin on a core after each run and slow whichever contender runs next in
    # this process (compiled ResNet-18 at 2 threads: 17-22 ms instead of 9.5); ORT alone is as fast either
    # way (docs/benchmarks/kernels.md, session 6).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnxruntime_session(model: torch.nn.Module, example: torch.Tensor, work_dir: Path):
    """Dense ONNX Runtime session of `model` (dynamic batch when the export allows it)."""
    import onnxruntime as ort

    from kernels.runtime import PackagedModel
    if isinstance(model, PackagedModel):  # the exporter trips over the wrapper's nested exported graph
        model = model.graph
    path = Path(work_dir) / "dense.onnx"
    traced = example if example.shape[0] > 1 else torch.cat([example, example])
    with _quiet_onnx_exporter():
        try:
            torch.onnx.export(model, (traced,), str(path), input_names=["x"], dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False)
        except Exception:  # some graphs only export at a fixed batch
            torch.onnx.export(model, (example,), str(path), input_names=["x"], dynamo=True, external_data=False,
                              verbose=False)
    session = ort.InferenceSession(str(path), ort_baseline_options(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def _layer_rows(manifest: dict) -> list[dict]:
    rows = []
    for layer in manifest["layers"]:
        row = {"name": layer["name"], "kernel": layer["kernel"], "reason": layer.get("reason", ""),
               "dense_ms": layer.get("dense_ms"), "sparse_ms": layer.get("sparse_ms"),
               "effective_gflops": layer.get("effective_gflops"), "flop_ratio_limit": layer.get("flop_ratio_limit"),
               "dense_from_batch": layer.get("dense_from_batch"), "batch_checks": layer.get("batch_checks", [])}
        if row["dense_ms"] and row["sparse_ms"] and row["flop_ratio_limit"]:
            row["speedup"] = round(row["dense_ms"] / row["sparse_ms"], 3)
            row["fraction_of_limit"] = round(row["speedup"] / row["flop_ratio_limit"], 3)
        rows.append(row)
    return rows


def sparse_layers_at(manifest: dict, batch: int) -> int:
    """How many layers run the generated kernel at this batch (the others run dense torch)."""
    return sum(1 for layer in manifest["layers"] if layer["kernel"] == "sparse"
               and not (layer.get("dense_from_batch") and batch >= layer["dense_from_batch"]))


def _bytes(manifest: dict, package_dir: Path) -> dict:
    formats = [layer["format"] for layer in manifest["layers"] if layer["kernel"] == "sparse" and "format" in layer]
    return {"package_bytes": pkg.package_bytes(package_dir),
            "dense_weight_bytes": sum(f["dense_bytes"] for f in formats),
            "compact_weight_bytes": sum(f["compact_bytes"] for f in formats)}


def benchmark(model: torch.nn.Module, package_dir: Path, example_input: torch.Tensor, *, batches=(1, 8),
              runs: int = 50, warmup: int = 5, progress=None, onnxruntime: bool = True) -> dict:
    """Median latency (ms) per batch size of dense torch, dense ONNX Runtime and the compiled package."""
    from kernels.runtime import load
    progress = progress or _Silent()
    package_dir = Path(package_dir)
    dense = eval_module(model)
    compiled = load(package_dir)
    manifest = compiled.manifest
    example = example_input.detach().float().contiguous()
    speed = {"isa": manifest["isa"], "threads": torch.get_num_threads(), "compiler": manifest.get("compiler", ""),
             "runs": runs, "batches": {}, "skipped_batches": {}}
    with tempfile.TemporaryDirectory(prefix="zd_bench_") as work_dir:
        ort_run = None
        if onnxruntime:
            progress.update("measure", 0, len(batches) + 1, "exporting dense ONNX")
            try:
                ort_run = onnxruntime_session(dense, example, Path(work_dir))
            except Exception as exc:  # reported, never faked
                speed["onnxruntime_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        generator = torch.Generator().manual_seed(0)
        for index, batch in enumerate(batches):
            progress.check_cancelled()
            progress.update("measure", index + 1, len(batches) + 1, f"batch {batch}")
            if not manifest["dynamic_batch"] and batch != manifest["input_shape"][0]:
                speed["skipped_batches"][str(batch)] = "the model exported only at a fixed batch size"
                continue
            x = torch.randn((batch, *example.shape[1:]), generator=generator)
            contenders = {"torch_dense_ms": lambda: dense(x), "sparse_ms": lambda: compiled(x)}
            if ort_run is not None:
                try:
                    ort_run(x)
                    contenders["onnxruntime_dense_ms"] = lambda: ort_run(x)
                except Exception as exc:
                    speed["onnxruntime_error"] = f"batch {batch}: {type(exc).__name__}: {str(exc)[:300]}"
            with torch.inference_mode():
                error = relative_error(compiled(x), dense(x))
            samples = time_samples(contenders, budget_s=0.0, min_runs=runs, max_runs=runs, warmup=warmup,
                                   block=min(5, runs))
            row = {key: round(statistics.median(samples[key]), 4) for key in contenders}
            row["best"] = {key: round(min(samples[key]), 4) for key in contenders}  # fastest run of each
            row["max_rel_error"] = error
            row["sparse_layers_run"] = sparse_layers_at(manifest, batch)
            speed["batches"][str(batch)] = row
    first = next(iter(speed["batches"].values()), None)
    if first:
        speed["speedup_vs_torch"] = round(first["torch_dense_ms"] / first["sparse_ms"], 3)
        if "onnxruntime_dense_ms" in first:
            speed["speedup_vs_onnxruntime"] = round(first["onnxruntime_dense_ms"] / first["sparse_ms"], 3)
    speed["layers"] = _layer_rows(manifest)
    speed["layers_measured_at_batch"] = manifest["input_shape"][0]
    speed["layers_statistic"] = "fastest of interleaved runs while autotuning"
    speed.update(_bytes(manifest, package_dir))
    progress.update("measure", len(batches) + 1, len(batches) + 1, "done")
    return speed
