"""Accuracy benchmark: top-1 on the real CIFAR-10 test set of the original vs the pruned model, per method.

The engine never sees the data; it is used here only to check the product.
    .venv/bin/python -m benchmarks.accuracy [--models resnet20,resnet56] [--limit 10000] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.cifar import load_cifar10_test, top1
from worker.engine.compress import compress_module
from worker.engine.config import AUTO_RECOVERY_STEPS, CompressionConfig
from worker.engine.formats import load_model
from worker.progress import NullProgress
from benchmarks.shared_assets import SHARED_MODELS

MODELS = SHARED_MODELS
INPUT_SHAPE = (1, 3, 32, 32)

# name -> config overrides on top of the engine defaults
METHODS = {
    "magnitude projection (no data)": dict(synthetic="gaussian", synthetic_samples=1, fidelity_samples=64,
                                           recovery_steps=0, bn_recalibration=False,
                                           extra={"method": "magnitude-only", "bn_correction": False}),
    "ADMM + gaussian (paper)": dict(synthetic="gaussian", recovery_steps=0, bn_recalibration=False),
    "ADMM + bn-inversion": dict(recovery_steps=0, bn_recalibration=False),
    "ADMM + bn-inversion + BN recalibration with layer targets only (before residual targets)": dict(
        recovery_steps=0, extra={"residual_targets": False}),
    "ADMM + bn-inversion + BN recalibration": dict(recovery_steps=0),
    "ADMM + bn-inversion + BN recalibration + distillation on fixed inputs": dict(
        recovery_steps=AUTO_RECOVERY_STEPS, extra={"fresh_inputs": {"inversion_steps": 0}}),
    "ADMM + bn-inversion + BN recalibration + distillation with feature terms on conv outputs": dict(
        recovery_steps=AUTO_RECOVERY_STEPS, extra={"distill_features": "output"}),
    "ADMM + bn-inversion + BN recalibration + distillation with feature terms on conv inputs": dict(
        recovery_steps=AUTO_RECOVERY_STEPS, extra={"distill_features": "input"}),
    "ADMM + bn-inversion + BN recalibration + distillation on re-inverted inputs": dict(
        recovery_steps=AUTO_RECOVERY_STEPS),
    # distillation (re-inverted inputs) only where whole kernels are removed
    "engine defaults": dict(),
}


def run(models: list[str], limit: int | None, quick: bool, cache_dir: Path, methods: list[str],
        connectivities: list[float], budget: dict | None = None) -> list[dict]:
    x, y = load_cifar10_test(limit=limit)
    rows = []
    for name in models:
        module = load_model(MODELS / f"{name}_cifar10.pt2").module
        dense = top1(module, x, y)
        rows.append({"model": name, "method": "original (dense)", "conn": "", "top1": dense, "drop": 0.0,
                     "agreement": "", "seconds": ""})
        print(f"{name} dense {dense:.2f}", flush=True)
        for conn in connectivities:
            for method in methods:
                overrides = dict(METHODS[method])
                for key, value in (budget or {}).items():
                    if key in overrides:
                        continue  # a method's own setting (e.g. recovery_steps=0) wins
                    overrides[key] = value
                if quick:  # a smoke run of every path, not a measurement
                    overrides.setdefault("synthetic_samples", 64)
                    overrides.setdefault("recovery_steps", 20)
                    overrides.update(synthetic_steps=20, fidelity_samples=32)
                cfg = dataclasses.replace(CompressionConfig(), connectivity=conn, **overrides)
                start, cpu_start = time.monotonic(), time.process_time()
                result = compress_module(module, INPUT_SHAPE, cfg, NullProgress(), cache_dir=cache_dir)
                seconds, cpu = time.monotonic() - start, time.process_time() - cpu_start
                acc = top1(result.module, x, y)
                row = {"model": name, "method": method, "conn": conn, "top1": acc, "drop": dense - acc,
                       "agreement": result.fidelity.get("top1_agreement"), "seconds": seconds, "cpu": cpu,
                       "stages": result.report["seconds"], "cached": result.report["synthetic"].get("cached")}
                rows.append(row)
                print(f"{name} conn={conn} {method}: top1 {acc:.2f} (drop {dense - acc:.2f}) "
                      f"agreement {row['agreement']} {seconds:.0f}s cpu {cpu:.0f}s {row['stages']} cached={row['cached']}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | method | connectivity | top-1 | drop | synthetic agreement | CPU s | wall s (stages) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = f"{r['agreement']:.3f}" if isinstance(r["agreement"], float) else ""
        secs = f"{r['seconds']:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in r['stages'].items())})" \
            if isinstance(r["seconds"], float) else ""
        cached = " (inputs cached)" if r.get("cached") else ""
        cpu = f"{r['cpu']:.0f}" if "cpu" in r else ""
        lines.append(f"| {r['model']} | {r['method']} | {r['conn']} | {r['top1']:.2f} | {r['drop']:.2f} | "
                     f"{agree} | {cpu} | {secs}{cached} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="ResNet-20, 1000 images, tiny budgets: a smoke run")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    ap.add_argument("--connectivity", default="0,0.5")
    ap.add_argument("--samples", type=int, default=None, help="override synthetic_samples (default: engine's)")
    ap.add_argument("--fidelity-samples", type=int, default=None)
    ap.add_argument("--cache-dir", default=None, help="synthetic-input cache (default: a fresh temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = ["resnet20"] if args.quick else args.models.split(",")
    limit = 1000 if args.quick and args.limit is None else args.limit
    methods = [m.strip() for m in args.methods.split(",")]
    conns = [float(c) for c in args.connectivity.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp)
        budget = {k: v for k, v in (("synthetic_samples", args.samples), ("fidelity_samples", args.fidelity_samples))
                  if v is not None}
        rows = run(models, limit, args.quick, cache, methods, conns, budget)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
