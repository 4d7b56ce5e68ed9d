"""Interleaved A/B of tiles per layer: every listed tile of a layer built into one library, run round-robin.

Same layers and weights as benchmarks/kernel_layers.py; prints median / fastest ms and the median speedup over
the first tile. With --threads 1 it times the calling thread's CPU time (robust to a busy machine).

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.kernel_tile_ab --tiles f6v4c0 f6v4c128d \\
        --layers l512_7 --threads 1 --runs 80
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.kernel_layers import DENSITIES, LAYERS, pruned_weight
from benchmarks.round_robin import clock_for, time_round_robin
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.format import compact_conv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec, TileConfig

# ResNet-56 (CIFAR, 32x32 input) shaped layers: timed only when named in --layers (same seeds as LAYERS by position).
CIFAR_LAYERS = [
    ("c16_32", 16, 16, 32, 1),
    ("c32_16", 32, 32, 16, 1),
    ("c64_8", 64, 64, 8, 1),
    ("cd32_32", 16, 32, 32, 2),
]


def parse_tile(label: str) -> TileConfig:
    """'f6v4c128d' -> TileConfig(6, 4, 128, direct=True), 'f4v6c0p' -> a pixels tile: the inverse of
    TileConfig.label."""
    match = re.fullmatch(r"f(\d+)v(\d+)c(\d+)(d?)(p?)", label)
    if not match:
        raise argparse.ArgumentTypeError(f"tile {label!r} is not like f4v4c16, f6v4c128d or f4v6c0p")
    f, v, c, d, p = match.groups()
    return TileConfig(int(f), int(v), int(c), direct=bool(d), pixels=bool(p))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", nargs="+", type=parse_tile, required=True)
    ap.add_argument("--layers", nargs="*", help="subset of benchmarks.kernel_layers layer names, or CIFAR_LAYERS names")
    ap.add_argument("--densities", nargs="*", default=list(DENSITIES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=80)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zd_kernel_bench"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = clock_for(args.threads)
    isa = detect_isa()
    for density in args.densities:
        for seed, (name, c, k, size, stride) in enumerate(LAYERS + CIFAR_LAYERS):
            if (args.layers or seed >= len(LAYERS)) and name not in (args.layers or ()):
                continue
            weight, bias = pruned_weight(k, c, DENSITIES[density], seed), torch.randn(k)
            compact = compact_conv(weight, bias, name=name)
            specs = [ConvSpec(f"{name}_{t.label}", c, k, size, size, stride=stride, padding=1) for t in args.tiles]
            lib = build_library(generate_source([(s, compact, t) for s, t in zip(specs, args.tiles)], isa),
                                isa=isa, cache_dir=Path(args.cache))
            x = torch.randn(1, c, size, size)
            reference = F.conv2d(x, weight, bias, stride=stride, padding=1)
            ops = {t.label: CompiledConv(lib, s) for s, t in zip(specs, args.tiles)}
            for label, op in ops.items():
                torch.testing.assert_close(op(x), reference, rtol=1e-4, atol=1e-4, msg=f"{name} {label}")
            times = time_round_robin({label: lambda op=op: op(x) for label, op in ops.items()}, args.runs, clock,
                                     warmup=0)
            first = statistics.median(times[args.tiles[0].label])
            print(f"{name} {density}: " + "  ".join(
                f"{label} {statistics.median(t):.3f}/{min(t):.3f} ({first / statistics.median(t):.2f}x)"
                for label, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
