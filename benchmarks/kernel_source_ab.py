"""Interleaved A/B of generator source trees: each tree generates its own library for the same layers and tiles,
all run round-robin in one process (thread CPU time at one thread), each checked against F.conv2d first.

    git archive HEAD kernels benchmarks | tar -x -C /tmp/me/base
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.kernel_source_ab --layers l64_56 l128_28 \\
        --densities 4/9x0.5 --tiles f4v3c32 f6v2c0 --runs 60 base=/tmp/me/base new=.

A tree is any directory holding a `kernels` package (and `benchmarks`, for the layer weights); the first
contender (first tree, first tile) is the reference of the printed speedups. Absolute times on a shared VM drift
between runs; the ratios inside one run are the result.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.kernel_layers import DENSITIES, LAYERS, pruned_weight
from benchmarks.round_robin import clock_for, time_round_robin
from kernels.build import build_library
from kernels.conv_op import CompiledConv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec

# Runs inside the tree (PYTHONPATH=tree): same weights as kernel_layers, that tree's TileConfig and generator.
_GENERATE = """
import sys, torch
from benchmarks.kernel_layers import DENSITIES, LAYERS, pruned_weight
from benchmarks.kernel_tile_ab import parse_tile
from kernels.codegen import generate_source
from kernels.format import compact_conv
from kernels.spec import ConvSpec
name, density, tile, symbol, isa, out = sys.argv[1:7]
seed = [layer[0] for layer in LAYERS].index(name)
_, c, k, size, stride = LAYERS[seed]
torch.manual_seed(seed)
compact = compact_conv(pruned_weight(k, c, DENSITIES[density], seed), torch.randn(k), name=name)
spec = ConvSpec(symbol, c, k, size, size, stride=stride, padding=1)
open(out, "w").write(generate_source([(spec, compact, parse_tile(tile))], isa))
"""


def tree_source(tree: str, name: str, density: str, tile: str, symbol: str, isa: str, work: Path) -> str:
    out = work / f"{symbol}.cpp"
    subprocess.run([sys.executable, "-c", _GENERATE, name, density, tile, symbol, isa, str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(tree).resolve())})
    return out.read_text()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="label=path of a source tree")
    ap.add_argument("--layers", nargs="+", required=True, help="benchmarks.kernel_layers layer names")
    ap.add_argument("--densities", nargs="*", default=list(DENSITIES))
    ap.add_argument("--tiles", nargs="+", required=True, help="tile labels, e.g. f4v3c32 f4v3c64d")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--isa", default=None, help="build for this ISA instead of the best this machine runs "
                    "(e.g. avx2 on an AVX-512 host)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zd_kernel_bench"))
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.trees)
    torch.set_num_threads(1)
    clock, isa = clock_for(1), args.isa or detect_isa()
    with tempfile.TemporaryDirectory(prefix="zd_source_ab_") as tmp:
        for density in args.densities:
            for name in args.layers:
                seed = [layer[0] for layer in LAYERS].index(name)
                _, c, k, size, stride = LAYERS[seed]
                torch.manual_seed(seed)
                weight, bias = pruned_weight(k, c, DENSITIES[density], seed), torch.randn(k)
                x = torch.randn(1, c, size, size)
                reference = F.conv2d(x, weight, bias, stride=stride, padding=1)
                fns = {}
                for label, tree in trees.items():
                    for tile in args.tiles:
                        spec = ConvSpec(f"{name}_{label}_{tile}", c, k, size, size, stride=stride, padding=1)
                        source = tree_source(tree, name, density, tile, spec.name, isa, Path(tmp))
                        op = CompiledConv(build_library(source, isa=isa, cache_dir=Path(args.cache)), spec)
                        torch.testing.assert_close(op(x), reference, rtol=1e-4, atol=1e-4, msg=f"{label} {tile}")
                        fns[f"{label}:{tile}"] = lambda op=op: op(x)
                times = time_round_robin(fns, args.runs, clock, warmup=3)
                first = statistics.median(next(iter(times.values())))
                print(f"{name} {density}: " + "  ".join(
                    f"{key} {statistics.median(t):.3f}/{min(t):.3f} ({first / statistics.median(t):.2f}x)"
                    for key, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
