"""Dense 1x1 convs (ResNet-50's shapes): generated tiles side by side with a one-conv ONNX Runtime session and
F.conv2d, interleaved; ms and GFLOP/s per contender. The 1x1 weight is compiled as graph.py hands it over, the
centre tap of a 3x3, so flat-grid tiles (f4v4c0) and pointwise tiles (f4v6c0p, kernels/pointwise_conv.py) compete.
ORT's one-conv session pays its NCHW <-> NCHWc reorders, which its whole-model graph does not.

    .venv/bin/python -m benchmarks.kernel_pointwise --threads 2 --tiles f8v3c0 f4v4c0 f6v4c0 f4v6c0p f3v8c0p
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.kernel_layers import median_ms, ort_conv
from benchmarks.kernel_tile_ab import parse_tile
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.format import compact_conv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec

# (in channels, out channels, input size, stride)
LAYERS = [(1024, 256, 14, 1), (256, 1024, 14, 1), (256, 64, 56, 1), (2048, 512, 7, 1), (512, 128, 28, 1),
          (256, 512, 56, 2), (1024, 2048, 14, 2), (64, 64, 56, 1)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", nargs="+", type=parse_tile, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--isa", default=None, help="build for this ISA instead of the best this machine runs")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zd_kernel_bench"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    isa = args.isa or detect_isa()
    print(f"isa {isa}, threads {args.threads}; median ms (GFLOP/s)\n")
    print("| 1x1 layer | " + " | ".join(t.label for t in args.tiles) + " | ORT (one conv) | F.conv2d |")
    print("|---" * (len(args.tiles) + 3) + "|")
    for seed, (c, k, size, stride) in enumerate(LAYERS):
        gen = torch.Generator().manual_seed(seed)
        weight, bias = torch.randn(k, c, 1, 1, generator=gen), torch.randn(k, generator=gen)
        centre = F.pad(weight, (1, 1, 1, 1))
        compact = compact_conv(centre, bias, name="pointwise")
        specs = [ConvSpec(f"pw_{t.label}", c, k, size, size, stride=stride, padding=1) for t in args.tiles]
        library = build_library(generate_source([(s, compact, t) for s, t in zip(specs, args.tiles)], isa),
                                isa=isa, cache_dir=Path(args.cache))
        x = torch.randn(1, c, size, size, generator=gen)
        reference = F.conv2d(x, weight, bias, stride=stride)
        fns = {}
        for spec, tile in zip(specs, args.tiles):
            op = CompiledConv(library, spec)
            torch.testing.assert_close(op(x), reference, rtol=1e-4, atol=1e-3)
            fns[tile.label] = lambda op=op: op(x)
        session, xn = ort_conv(weight, bias, (1, c, size, size), stride, 0, args.threads), x.numpy()
        fns["ort"] = lambda: session.run(None, {"x": xn})
        fns["torch"] = lambda: F.conv2d(x, weight, bias, stride=stride)
        ms = median_ms(fns, args.runs)
        flops = 2 * c * k * (-(-size // stride)) ** 2
        cells = [f"{ms[name]:.3f} ({flops / ms[name] / 1e6:.0f})" for name in fns]
        print(f"| {c}->{k}, {size}x{size}, stride {stride} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
