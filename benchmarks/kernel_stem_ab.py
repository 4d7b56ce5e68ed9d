"""The ResNet stem conv alone (3->64, 7x7, stride 2, pad 3, + bias + ReLU, 224x224, batch 1): compiled tiles vs
dense torch vs ONNX Runtime, interleaved in one process.

With --threads 1 it times the calling thread's CPU time (robust to a busy machine).

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.kernel_stem_ab --tiles f4v6c0d f6v4c0d --runs 60
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.kernel_tile_ab import parse_tile
from benchmarks.round_robin import clock_for, time_round_robin
from kernels.bench import onnxruntime_session
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.format import compact_conv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", nargs="+", type=parse_tile, default=[parse_tile("f4v6c0d"), parse_tile("f6v4c0d")])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zd_kernel_bench"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = clock_for(args.threads)
    gen = torch.Generator().manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU()).eval()
    with torch.no_grad():
        stem[0].weight.copy_(torch.randn(64, 3, 7, 7, generator=gen) * 0.1)
    weight, bias = stem[0].weight.detach(), stem[0].bias.detach()
    compact = compact_conv(weight, bias, name="stem", max_entries=49)
    isa = detect_isa()
    specs = [ConvSpec(f"stem_{t.label}", 3, 64, 224, 224, stride=2, padding=3, relu=True, kernel_size=7)
             for t in args.tiles]
    library = build_library(generate_source([(s, compact, t) for s, t in zip(specs, args.tiles)], isa), isa=isa,
                            cache_dir=Path(args.cache))
    x = torch.randn(1, 3, 224, 224, generator=gen)
    fns = {}
    with torch.inference_mode():
        reference = stem(x)
        for spec, tile in zip(specs, args.tiles):
            op = CompiledConv(library, spec)
            torch.testing.assert_close(op(x), reference, rtol=1e-4, atol=1e-4, msg=tile.label)
            fns[tile.label] = lambda op=op: op(x)
        fns["torch conv+relu"] = lambda: torch.relu(F.conv2d(x, weight, bias, 2, 3))
        ort = onnxruntime_session(stem, x, tempfile.mkdtemp(prefix="zd_stem_ab_"))
        fns["onnxruntime"] = lambda: ort(x)
        times = time_round_robin(fns, args.runs, clock)
    flops = 2 * 64 * 3 * 49 * 112 * 112
    ort_med = statistics.median(times["onnxruntime"])
    print(f"stem 3->64 7x7/2 224x224, batch 1, {args.threads} thread(s), "
          f"{'thread CPU' if args.threads == 1 else 'wall'} ms, {args.runs} interleaved runs")
    print("| contender | median ms | fastest ms | GFLOP/s (median) | vs ORT (median) |")
    print("|---|---|---|---|---|")
    for label, t in times.items():
        med = statistics.median(t)
        print(f"| {label} | {med:.3f} | {min(t):.3f} | {flops / med / 1e6:.0f} | {ort_med / med:.2f}x |")


if __name__ == "__main__":
    main()
