"""`zerodata compile` and `zerodata bench`: the kernel compiler from the command line."""
from __future__ import annotations

import json
from pathlib import Path

import click

MAX_BATCH = 4096


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """"1,3,32,32" -> (1, 3, 32, 32); rejects anything but 4 positive, sane ints."""
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers (e.g. 1,3,32,32)") from None
    if len(shape) != 4 or any(d < 1 for d in shape) or shape[0] > MAX_BATCH or any(d > 8192 for d in shape[1:]):
        raise click.BadParameter(f"{text!r}: expected N,C,H,W with 1 <= N <= {MAX_BATCH} and 1 <= C,H,W <= 8192")
    return shape


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of batch sizes") from None
    if not batches or len(batches) > 16 or any(not 1 <= b <= MAX_BATCH for b in batches):
        raise click.BadParameter(f"{text!r}: 1 to 16 batch sizes, each in 1..{MAX_BATCH}")
    return batches


def shape_option(ctx, param, value):
    """click callback for every --input-shape option."""
    return parse_shape(value)


def _batches_option(ctx, param, value):
    return parse_batches(value)


def _load_dense(path: Path, input_shape: tuple[int, ...] | None):
    """(module, example input) from a model file, via the engine's safe loaders."""
    import torch

    from app.cli.model_file import self_contained
    from worker.engine.errors import EngineError
    from worker.engine.formats import load_model
    try:
        with self_contained(path) as model_file:
            loaded = load_model(model_file, input_shape=input_shape)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    shape = input_shape or loaded.input_shape
    if shape is None:
        raise click.ClickException(f"{path.name} does not declare its input shape: pass --input-shape N,C,H,W")
    return loaded.module, torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _progress():
    from app.cli.progress_bar import TqdmProgress
    return TqdmProgress()


def _close(progress) -> None:
    close = getattr(progress, "close", None)
    if callable(close):
        close()


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def layer_table(manifest: dict) -> str:
    lines = [f"{'layer':<28} {'kernel':<7} {'dense ms':>9} {'sparse ms':>9} {'limit':>6}  reason"]
    for layer in manifest["layers"]:
        lines.append(f"{layer['name'][:28]:<28} {layer['kernel']:<7} {_ms(layer.get('dense_ms')):>9} "
                     f"{_ms(layer.get('sparse_ms')):>9} {layer.get('flop_ratio_limit') or '-':>6}  "
                     f"{(layer.get('reason') or '')[:80]}")
    return "\n".join(lines)


def speed_table(speed: dict) -> str:
    lines = [f"ISA {speed['isa']}, {speed['threads']} threads, {speed['runs']} runs, median ms",
             f"{'batch':>5} {'torch dense':>12} {'ORT dense':>10} {'sparse':>8} {'vs torch':>9} {'vs ORT':>7}"]
    for batch, row in speed["batches"].items():
        ort, sparse = row.get("onnxruntime_dense_ms"), row["sparse_ms"]
        vs_ort = f"{ort / sparse:.2f}x" if ort else "-"
        lines.append(f"{batch:>5} {row['torch_dense_ms']:>12.3f} {_ms(ort):>10} {sparse:>8.3f} "
                     f"{row['torch_dense_ms'] / sparse:>8.2f}x {vs_ort:>7}")
    for batch, why in speed.get("skipped_batches", {}).items():
        lines.append(f"{batch:>5} skipped: {why}")
    if speed.get("onnxruntime_error"):
        lines.append(f"ONNX Runtime unavailable: {speed['onnxruntime_error']}")
    return "\n".join(lines)


def _compile(model, example, out: Path, tune: bool, cache_dir: Path | None) -> dict:
    import kernels
    from app.cli.local_caches import trim_local_caches
    from kernels.errors import KernelError
    from kernels.graph_compile import default_cache_dir
    progress = _progress()
    try:
        manifest = kernels.compile_model(model, example, out, progress=progress, tune=tune, cache_dir=cache_dir)
    except KernelError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        _close(progress)
    trim_local_caches(cache_dir or default_cache_dir())
    return manifest


@click.command("compile")
@click.argument("pruned_model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Package directory to write (replaced atomically if it is already a package).")
@click.option("--input-shape", callback=shape_option, help="N,C,H,W when the model does not declare it.")
@click.option("--no-tune", is_flag=True, help="Skip timing: take the first tile of every pattern-sparse layer.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Build cache directory.")
def compile_command(pruned_model: Path, out_dir: Path, input_shape: tuple | None, no_tune: bool,
                    cache_dir: Path | None) -> None:
    """Compile PRUNED_MODEL's pattern-sparse 3x3 convs into a kernel package at --out."""
    model, example = _load_dense(pruned_model, input_shape)
    manifest = _compile(model, example, out_dir, not no_tune, cache_dir)
    click.echo(layer_table(manifest))
    sparse = sum(layer["kernel"] == "sparse" for layer in manifest["layers"])
    click.echo(f"{sparse}/{len(manifest['layers'])} conv layers compiled for {manifest['isa']}; package: {out_dir}")


@click.command("bench")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--batches", default="1,8", show_default=True, callback=_batches_option,
              help="Comma-separated batch sizes.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--input-shape", callback=shape_option, help="N,C,H,W when the model does not declare it.")
@click.option("--model", "dense_model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Dense model to compare a package against (default: the package's own layers run dense).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the package when TARGET is a model file (default: a temporary directory).")
@click.option("--no-tune", is_flag=True, help="When compiling a model file: skip per-layer timing.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the speed report.")
def bench_command(target: Path, batches: tuple, runs: int, input_shape: tuple | None, dense_model: Path | None,
                  out_dir: Path | None, no_tune: bool, json_path: Path | None) -> None:
    """Time dense torch, dense ONNX Runtime and compiled sparse on TARGET (a model file or a package)."""
    import tempfile

    import torch

    from kernels.errors import KernelError
    from kernels.runtime import load
    batch_sizes, shape = batches, input_shape
    with tempfile.TemporaryDirectory(prefix="zd_bench_pkg_") as tmp:
        try:
            if target.is_dir():
                package_dir = target
                if dense_model is not None:
                    model, example = _load_dense(dense_model, shape)
                else:
                    model = load(package_dir, dense=True)
                    example = torch.randn(*(shape or model.manifest["input_shape"]))
            else:
                model, example = _load_dense(target, shape)
                package_dir = out_dir or Path(tmp) / "package"
                _compile(model, example, package_dir, not no_tune, None)
            speed = _bench(model, package_dir, example, batch_sizes, runs)
        except KernelError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(speed_table(speed))
    click.echo(layer_table({"layers": speed["layers"]}))
    if json_path:
        json_path.write_text(json.dumps(speed, indent=2) + "\n")


def _bench(model, package_dir: Path, example, batches, runs: int) -> dict:
    import kernels
    progress = _progress()
    try:
        return kernels.benchmark(model, package_dir, example, batches=batches, runs=runs, progress=progress)
    finally:
        _close(progress)


COMMANDS: list = [compile_command, bench_command]
