"""Kernel benchmark: dense torch eager vs dense ONNX Runtime vs compiled sparse, side by side in one run.

    .venv/bin/python -m benchmarks.kernels --threads 2 --batches 1,8 --runs 30

ResNet-18 (224), CIFAR VGG-16 (32) and ResNet-50 (224) with random pattern masks (8 four-entry
patterns) at density 4/9 (pattern only) and 4/9 x 0.5 (plus 50% connectivity). Prints markdown tables
(paste into docs/benchmarks/kernels.md) and optionally writes every number as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import kernels
from benchmarks.model_zoo import MODELS, build

DENSITIES = {"4/9": 0.0, "4/9x0.5": 0.5}


def run_case(name: str, density: str, args) -> dict:
    model, shape = build(name, DENSITIES[density], seed=args.seed)
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed))
    package = Path(args.work_dir) / f"{name}_{density.replace('/', '-')}"
    start = time.perf_counter()
    manifest = kernels.compile_model(model, example, package, tune=True, cache_dir=Path(args.work_dir) / "cache")
    compile_s = time.perf_counter() - start
    speed = kernels.benchmark(model, package, example, batches=args.batches, runs=args.runs)
    return {"model": name, "density": density, "compile_s": round(compile_s, 1), "speed": speed,
            "whole_model": manifest.get("whole_model", {})}


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(results: list[dict]) -> str:
    lines = ["| model | density | batch | torch eager ms | ORT ms | sparse ms | vs torch | vs ORT | sparse layers run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        layers = r["speed"]["layers"]
        for batch, row in r["speed"]["batches"].items():
            sparse = row.get("sparse_layers_run", sum(layer["kernel"] == "sparse" for layer in layers))
            ort = row.get("onnxruntime_dense_ms")
            lines.append(f"| {r['model']} | {r['density']} | {batch} | {_fmt(row['torch_dense_ms'])} | {_fmt(ort)} | "
                         f"{_fmt(row['sparse_ms'])} | {row['torch_dense_ms'] / row['sparse_ms']:.2f}x | "
                         f"{(ort / row['sparse_ms']) if ort else 0:.2f}x | {sparse}/{len(layers)} |")
    return "\n".join(lines)


def best_table(results: list[dict]) -> str:
    """The same runs, fastest run of each contender: what a quiet machine would show."""
    lines = ["| model | density | batch | torch eager ms | ORT ms | sparse ms | vs torch | vs ORT |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for batch, row in r["speed"]["batches"].items():
            best = row["best"]
            ort = best.get("onnxruntime_dense_ms")
            lines.append(f"| {r['model']} | {r['density']} | {batch} | {_fmt(best['torch_dense_ms'])} | {_fmt(ort)} | "
                         f"{_fmt(best['sparse_ms'])} | {best['torch_dense_ms'] / best['sparse_ms']:.2f}x | "
                         f"{(ort / best['sparse_ms']) if ort else 0:.2f}x |")
    return "\n".join(lines)


def layer_table(result: dict) -> str:
    lines = [f"**{result['model']} at {result['density']}**, per layer at batch "
             f"{result['speed']['layers_measured_at_batch']} (autotuning: fastest of interleaved runs)", "",
             "| layer | kernel | dense ms | sparse ms | speedup | FLOP-ratio limit | of limit | eff. GFLOP/s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for layer in result["speed"]["layers"]:
        note = (layer.get("reason") or "")[:60]
        checks = ", ".join(f"b{c['batch']}: {c['sparse_ms']:.2f} vs dense {c['dense_ms']:.2f} ms"
                           for c in layer.get("batch_checks", []))
        if checks:
            note = (note + "; " if note else "") + checks + (
                f" -> dense from batch {layer['dense_from_batch']}" if layer.get("dense_from_batch") else "")
        lines.append(f"| {layer['name']} | {layer['kernel']} | {_fmt(layer['dense_ms'], 3)} | "
                     f"{_fmt(layer['sparse_ms'], 3)} | {_fmt(layer.get('speedup'))} | "
                     f"{_fmt(layer['flop_ratio_limit'])} | {_fmt(layer.get('fraction_of_limit'))} | "
                     f"{_fmt(layer['effective_gflops'], 0)} | {note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--densities", default=",".join(DENSITIES))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/zd_kernel_model_bench")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--layers", default="resnet18", help="models whose per-layer table is printed")
    args = parser.parse_args()
    args.batches = tuple(int(b) for b in args.batches.split(","))
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models.split(","):
        for density in args.densities.split(","):
            result = run_case(name, density, args)
            results.append(result)
            print(summary_table([result]).split("\n", 2)[2], flush=True)
            print(best_table([result]).split("\n", 2)[2], flush=True)
            if args.json_path:  # after every case, so a long run cut short still leaves its numbers
                Path(args.json_path).write_text(json.dumps(results, indent=2))
    print(f"\nthreads {args.threads}, runs {args.runs}, ISA {results[0]['speed']['isa']}, "
          f"torch {torch.__version__}\n")
    print("Median of interleaved runs:\n")
    print(summary_table(results))
    print("\nFastest run of each contender (same runs):\n")
    print(best_table(results))
    for result in results:
        if result["model"] in args.layers.split(","):
            print("\n" + layer_table(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
