"""`zerodata compress`: run the whole pipeline locally on one model file (the same function the worker runs)."""
from __future__ import annotations

from pathlib import Path

import click

from app.cli.kernel_commands import shape_option
from worker.engine.config import CompressionConfig
from worker.engine.sample_budget import MAX_SAMPLES, MIN_SAMPLES


@click.command("compress")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for model.<ext>, masks.safetensors, sparse.zip, report.json and report.html "
                   "(created atomically).")
@click.option("--entries", type=int, default=CompressionConfig.entries, show_default=True,
              help="Weights kept per 3x3 kernel (centre included).")
@click.option("--library-size", type=int, default=CompressionConfig.library_size, show_default=True,
              help="Patterns in the per-model pattern library (at most 56 with 4 entries). More keep more "
                   "accuracy and cost some kernel speed: ResNet-56 lost 1.01-1.12 points with 8, 0.93-1.01 with 16, "
                   "0.65 with 56 (its KL to the dense model 0.11, 0.08, 0.06); compiled, 16 and 56 ran ~1.13x "
                   "and ~1.18x slower.")
@click.option("--connectivity", type=float, default=CompressionConfig.connectivity, show_default=True,
              help="Fraction of whole 3x3 kernels removed, in [0, 1).")
@click.option("--connectivity-allocation", type=click.Choice(["flops", "weights", "uniform"]),
              default=CompressionConfig.connectivity_allocation, show_default=True,
              help="What --connectivity is a fraction of: the 3x3 FLOPs (the cheapest kernels per FLOP go), all 3x3 "
                   "kernels (the cheapest go) or every layer's kernels (uniform).")
@click.option("--target-compression", type=float, default=None,
              help="Overall 3x3-conv compression ratio (e.g. 4.5); per-layer rates by sensitivity.")
@click.option("--synthetic", type=click.Choice(["bn-inversion", "gaussian"]), default=CompressionConfig.synthetic,
              show_default=True, help="How synthetic inputs are made (no real data is ever used).")
@click.option("--samples", type=int, default=None,
              help=f"Synthetic samples.  [default: automatic, {MIN_SAMPLES} to {MAX_SAMPLES} by the model's cost per "
                   f"image: ResNet-56 {MIN_SAMPLES}, ResNet-20 {MAX_SAMPLES}]")
@click.option("--steps", type=int, default=CompressionConfig.synthetic_steps, show_default=True,
              help="Optimisation steps for synthetic inputs.")
@click.option("--recovery-steps", type=int, default=None,
              help="Data-free recovery (distillation) steps after pruning.  [default: 200 when whole kernels are "
                   "removed (--connectivity or --target-compression), else 0]")
@click.option("--time-budget", type=float, default=CompressionConfig.time_budget_s, show_default=True,
              help="Wall-clock budget for the compression stage, seconds: fewer synthetic inputs (then steps) when "
                   "their synthesis would take over half of it; recovery shares the rest. "
                   "--set time_budget_s=null: no limit.")
@click.option("--input-shape", callback=shape_option, default=None,
              help="N,C,H,W for models that do not declare one (e.g. TorchScript): 1,3,32,32.")
@click.option("--seed", type=int, default=CompressionConfig.seed, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other CompressionConfig field, e.g. --set admm_iterations=10 (value parsed as JSON).")
@click.option("--compile/--no-compile", "compile_", default=True, show_default=True,
              help="Build the compiled sparse kernel package (sparse.zip).")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Time dense PyTorch, dense ONNX Runtime and the compiled package on this CPU.")
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="Try several kernel blockings per layer and keep the fastest.")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compress(model: Path, out_dir: Path, entries, library_size, connectivity, connectivity_allocation,
             target_compression, synthetic, samples, steps, recovery_steps, time_budget, input_shape, seed, device,
             overrides, compile_, measure, tune, force, quiet) -> None:
    """Prune MODEL (.pt2, .onnx or TorchScript) with pattern + connectivity sparsity, no data needed,
    then compile its sparse kernels and measure the speedup on this machine."""
    import warnings

    from app.cli.local_caches import trim_local_caches
    from app.cli.model_file import self_contained
    from app.cli.progress_bar import TqdmProgress
    from kernels.errors import KernelError
    from worker.engine.errors import EngineError
    from worker.pipeline import run_pipeline

    config = CompressionConfig(entries=entries, library_size=library_size, connectivity=connectivity,
                               connectivity_allocation=connectivity_allocation,
                               target_compression=target_compression, synthetic=synthetic,
                               synthetic_samples=samples, synthetic_steps=steps, recovery_steps=recovery_steps,
                               time_budget_s=time_budget, input_shape=input_shape, seed=seed, device=device)
    _apply_overrides(config, overrides)
    progress = TqdmProgress(disable=quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch deprecation notes, not the user's concern
            options = {"compile": compile_, "measure": measure, "tune": tune}
            with self_contained(model) as model_file:
                report = run_pipeline(model_file, out_dir, {**config.to_dict(), **options}, progress, force=force)
    except (EngineError, KernelError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. an output folder we may not write to
        raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or out_dir}") from None
    finally:
        progress.close()
    trim_local_caches()
    _print_summary(report, out_dir)


def _apply_overrides(config: CompressionConfig, overrides: tuple[str, ...]) -> None:
    import dataclasses
    import json

    fields = {f.name for f in dataclasses.fields(config)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}",
                                     param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string such as 2:4
        setattr(config, key, tuple(value) if key == "input_shape" and isinstance(value, list) else value)


def _print_summary(report: dict, out_dir: Path) -> None:
    compression, fidelity = report.get("compression", {}), report.get("fidelity", {})
    ratio = compression.get("compression_ratio")
    lines = [f"wrote {out_dir}/ ({', '.join(sorted(p.name for p in out_dir.iterdir()))})"]
    if ratio is not None:
        lines.append(f"3x3-conv compression: {ratio:.2f}x")
    if fidelity:
        parts = [f"{key} {fidelity[key]:.4g}" for key in ("top1_agreement", "mean_kl", "output_cosine")
                 if isinstance(fidelity.get(key), (int, float))]
        if parts:
            lines.append("fidelity on held-out synthetic inputs: " + ", ".join(parts))
    batch1 = report.get("speed", {}).get("batches", {}).get("1", {})
    if batch1.get("sparse_ms"):
        lines.append("batch-1 latency: " + ", ".join(f"{name} {batch1[key]:.3g} ms" for name, key in (
            ("compiled sparse", "sparse_ms"), ("dense ONNX Runtime", "onnxruntime_dense_ms"),
            ("dense PyTorch", "torch_dense_ms")) if batch1.get(key)))
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    click.echo("\n".join(lines))


COMMANDS: list = [compress]
