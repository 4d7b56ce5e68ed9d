"""Whole-model A/B of compiled packages at batch 1: packages, dense ONNX Runtime and torch eager in one process.

Runs round-robin, the order rotated every round (the contender timed right after ONNX Runtime ran ~1 ms slower
at 1 thread: docs/benchmarks/kernels.md, session 7), and prints each package's per-round difference to the
first package; with --threads 1 it times the calling thread's CPU time, which a busy machine disturbs far
less than wall time. The model is rebuilt from benchmarks.model_zoo with the packages' seed, so pass packages
that `benchmarks.kernels` compiled (its --work-dir holds <model>_<density>/).

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.kernel_model_ab --density 4/9x0.5 \\
        before=/tmp/a/resnet18_4-9x0.5 after=/tmp/b/resnet18_4-9x0.5
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import kernels
from benchmarks.kernels import DENSITIES
from benchmarks.round_robin import clock_for, time_round_robin
from benchmarks.model_zoo import build
from kernels.bench import onnxruntime_session


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+",
                    help="label=package_dir, or label=package_dir:nchw to load it with padded_layout=False")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--density", choices=list(DENSITIES), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = clock_for(args.threads)
    model, shape = build(args.model, DENSITIES[args.density], seed=args.seed)
    model.eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        reference = model(x)
        fns = {}
        for item in args.packages:
            label, path = item.split("=", 1)
            nchw = path.endswith(":nchw")
            compiled = kernels.load(path.removesuffix(":nchw"), padded_layout=not nchw)
            torch.testing.assert_close(compiled(x), reference, rtol=1e-3, atol=1e-3, msg=label)
            fns[label] = lambda compiled=compiled: compiled(x)
        ort = onnxruntime_session(model, x, tempfile.mkdtemp(prefix="zd_model_ab_"))
        fns["onnxruntime"] = lambda: ort(x)
        fns["torch eager"] = lambda: model(x)
        times = _rotated_rounds(fns, args.runs, clock)
    ort_med, ort_min = statistics.median(times["onnxruntime"]), min(times["onnxruntime"])
    print(f"{args.model} {args.density}, batch 1, {args.threads} thread(s), "
          f"{'thread CPU' if args.threads == 1 else 'wall'} ms, {args.runs} interleaved runs")
    print("| contender | median ms | fastest ms | vs ORT (median) | vs ORT (fastest) |")
    print("|---|---|---|---|---|")
    for label, t in times.items():
        med, low = statistics.median(t), min(t)
        print(f"| {label} | {med:.2f} | {low:.2f} | {ort_med / med:.2f}x | {ort_min / low:.2f}x |")
    packages = [item.split("=", 1)[0] for item in args.packages]
    for label in packages[1:]:
        diffs = [b - a for a, b in zip(times[packages[0]], times[label])]
        print(f"{label} - {packages[0]}, per round: median {statistics.median(diffs):+.3f} ms, "
              f"faster in {sum(d < 0 for d in diffs)}/{len(diffs)} rounds")


def _rotated_rounds(fns: dict, runs: int, clock) -> dict[str, list[float]]:
    """time_round_robin one round at a time, each round starting one contender later."""
    labels = list(fns)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(runs):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label, t in time_round_robin({k: fns[k] for k in order}, 1, clock, warmup=2 if r == 0 else 0).items():
            times[label] += t
    return times


if __name__ == "__main__":
    main()
