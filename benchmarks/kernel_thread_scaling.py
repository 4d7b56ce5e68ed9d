"""What a second thread buys: each one-call run of compiled layers (`zd_segment_*`) and the whole model, timed at
one and at two threads in the same process, interleaved round by round (this VM's speed drifts between
processes, so only same-process ratios mean anything).

    .venv/bin/python -m benchmarks.kernel_thread_scaling --model resnet56_cifar --density 4/9x0.5

Compiles the benchmark model (random pattern masks, as benchmarks/kernels.py) unless --package names one.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kernels
from benchmarks.kernels import DENSITIES
from benchmarks.model_zoo import build
from kernels.package import read_manifest
from kernels.segments import CompiledSegment


def _median_us(call, calls: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def segment_inputs(model, x: torch.Tensor) -> dict[str, tuple]:
    """Each segment's arguments, captured from one forward."""
    captured = {}
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: captured.__setitem__(name, args))
             for name, module in model.graph.named_modules() if isinstance(module, CompiledSegment)]
    model(x)
    for hook in hooks:
        hook.remove()
    return captured


def scaling_rows(model, x: torch.Tensor, rounds: int, calls: int) -> list[tuple[str, int, float, float]]:
    """(part, layers, median us at 1 thread, at 2 threads) for every segment, then the whole model."""
    segments = dict(model.graph.named_modules())
    parts = [(name, len(segments[name].layers), lambda s=segments[name], a=args: s(*a))
             for name, args in segment_inputs(model, x).items()]
    parts.append(("whole model", sum(p[1] for p in parts), lambda: model(x)))
    samples = {(name, t): [] for name, _, _ in parts for t in (1, 2)}
    for r in range(rounds):
        for threads in ((1, 2) if r % 2 else (2, 1)):
            torch.set_num_threads(threads)
            for name, _, call in parts:
                samples[(name, threads)].append(_median_us(call, calls))
    return [(name, layers, statistics.median(samples[(name, 1)]), statistics.median(samples[(name, 2)]))
            for name, layers, _ in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet56_cifar")
    parser.add_argument("--density", default="4/9x0.5")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--package", help="time this existing package instead of compiling one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zd_scaling_") as work:
        package = Path(args.package) if args.package else Path(work) / "package"
        if args.package:  # its own input shape, whatever --model says
            shape = tuple(read_manifest(package)["input_shape"])
        else:
            model, shape = build(args.model, DENSITIES[args.density], seed=0)
            torch.set_num_threads(2)
            kernels.compile_model(model, torch.randn(*shape, generator=torch.Generator().manual_seed(0)), package,
                                  tune=True)
        compiled = kernels.load(package)
        x = torch.randn((args.batch, *shape[1:]), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            rows = scaling_rows(compiled, x, args.rounds, args.calls)
    print(f"{args.package or args.model + ' ' + args.density} batch {args.batch}: median us of interleaved rounds\n")
    print("| part | layers | 1 thread | 2 threads | scaling |\n|---|---|---|---|---|")
    for name, layers, one, two in rows:
        print(f"| {name} | {layers} | {one:.0f} | {two:.0f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
