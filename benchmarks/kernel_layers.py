"""Per-layer microbenchmark: generated pattern-sparse kernels vs dense F.conv2d and ONNX Runtime, same threads.

ResNet-18-shaped 3x3 layers (batch 1 by default), random patterns from an 8-pattern library of 4 entries
(centre kept, as benchmarks/model_zoo.py), optionally 50% connectivity pruning. Every candidate tile is
compiled, checked against F.conv2d and timed; the table shows the best one and the first (default) one.
Timings are medians over interleaved rounds so a busy machine hurts all contenders alike.

    .venv/bin/python -m benchmarks.kernel_layers [--threads 2] [--batch 1] [--runs 30] [--layers 64@56 ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from benchmarks.model_zoo import pattern_library
from kernels.bench import ort_baseline_options
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.format import compact_conv
from kernels.isa import detect_isa
from kernels.spec import ConvSpec
from kernels.tiles import candidate_tiles

# (name, in_channels, out_channels, input size, stride)
LAYERS = [
    ("l64_56", 64, 64, 56, 1),
    ("l128_28", 128, 128, 28, 1),
    ("l256_14", 256, 256, 14, 1),
    ("l512_7", 512, 512, 7, 1),
    ("d128_56", 64, 128, 56, 2),
    ("d256_28", 128, 256, 28, 2),
    ("d512_14", 256, 512, 14, 2),
]
DENSITIES = {"4/9": 0.0, "4/9x0.5": 0.5}


def pruned_weight(k: int, c: int, connectivity: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    library = pattern_library(8, seed=seed)
    masks = torch.zeros(len(library), 9)
    for i, pattern in enumerate(library):
        masks[i, list(pattern)] = 1
    mask = masks[torch.randint(len(library), (k, c), generator=gen)]
    if connectivity > 0:
        dropped = torch.randperm(k * c, generator=gen)[: round(k * c * connectivity)]
        mask.view(k * c, 9)[dropped] = 0
    return (torch.randn(k, c, 9, generator=gen) * mask).view(k, c, 3, 3)


def ort_conv(weight: torch.Tensor, bias: torch.Tensor, input_shape: tuple[int, ...], stride: int, padding: int,
             threads: int):
    """A one-conv ONNX Runtime session (the kernel size is the weight's), with the baseline's session options."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(weight.shape[2:]),
                            strides=[stride] * 2, pads=[padding] * 4)
    graph = helper.make_graph([conv], "conv", [x], [y], initializer=[
        numpy_helper.from_array(weight.numpy(), "w"), numpy_helper.from_array(bias.numpy(), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return ort.InferenceSession(model.SerializeToString(), ort_baseline_options(threads),
                                providers=["CPUExecutionProvider"])


def median_ms(fns: dict[str, callable], runs: int, rounds: int = 3, warmup: int = 3,
              clock=time.perf_counter) -> dict[str, float]:
    """Median per contender over `rounds` blocks of `runs` back-to-back calls, blocks interleaved.

    Back-to-back within a block because thread pools (OpenMP, ONNX Runtime) spin after a call and would
    steal the cores from whichever contender runs next.
    """
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(runs):
                t = clock()
                fn()
                times[name].append(clock() - t)
    return {name: 1e3 * statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--layers", nargs="*", help="subset of layer names")
    ap.add_argument("--densities", nargs="*", default=list(DENSITIES))
    ap.add_argument("--max-tiles", type=int, default=6)
    ap.add_argument("--cpu-time", action="store_true",
                    help="with --threads 1: time the calling thread's CPU time, robust to a busy machine")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "zd_kernel_bench"))
    args = ap.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time measures the calling thread only: use it with --threads 1")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    isa = detect_isa()
    layers = [l for l in LAYERS if not args.layers or l[0] in args.layers]
    print(f"isa {isa}, threads {args.threads}, batch {args.batch}, runs {args.runs} x 3 rounds, "
          f"clock {'thread CPU time' if args.cpu_time else 'wall'}, load average {os.getloadavg()[0]:.1f}")
    print("| layer (C->K, HxW, stride) | density | sparse best (tile) | sparse default | GFLOP/s eff. | "
          "ORT dense | ORT GFLOP/s | F.conv2d | vs ORT | vs conv2d | FLOP limit vs ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for density in args.densities:
        for seed, (name, c, k, size, stride) in enumerate(layers):
            weight = pruned_weight(k, c, DENSITIES[density], seed)
            bias = torch.randn(k)
            base = ConvSpec(name, c, k, size, size, stride=stride, padding=1)
            compact = compact_conv(weight, bias, name=name)
            tiles = candidate_tiles(base, isa)[: args.max_tiles]
            specs = [ConvSpec(f"{name}_{t.label}", c, k, size, size, stride=stride, padding=1) for t in tiles]
            t0 = time.perf_counter()
            lib = build_library(generate_source([(s, compact, t) for s, t in zip(specs, tiles)], isa),
                                isa=isa, cache_dir=Path(args.cache))
            build_s = time.perf_counter() - t0
            x = torch.randn(args.batch, c, size, size)
            ref = F.conv2d(x, weight, bias, stride=stride, padding=1)
            ops = {t.label: CompiledConv(lib, s) for s, t in zip(specs, tiles)}
            for label, op in ops.items():
                err = (op(x) - ref).abs().max().item()
                assert err < 1e-3 * max(1.0, ref.abs().max().item()), (name, label, err)
            sess = ort_conv(weight, bias, (args.batch, c, size, size), stride, 1, args.threads)
            xn = x.numpy()
            fns = {label: (lambda op=op: op(x)) for label, op in ops.items()}
            fns["ort"] = lambda: sess.run(None, {"x": xn})
            fns["torch"] = lambda: F.conv2d(x, weight, bias, stride=stride, padding=1)
            ms = median_ms(fns, args.runs, clock=clock)
            best = min(ops, key=lambda label: ms[label])
            flops = base.dense_flops(args.batch)
            sparse_flops = 2 * compact.nnz * base.out_height * base.out_width * args.batch
            print(f"| {c}->{k}, {size}x{size}, s{stride} | {density} | {ms[best]:.3f} ms ({best}) | "
                  f"{ms[tiles[0].label]:.3f} ms | {sparse_flops / ms[best] / 1e6:.0f} | {ms['ort']:.3f} ms | "
                  f"{flops / ms['ort'] / 1e6:.0f} | {ms['torch']:.3f} ms | {ms['ort'] / ms[best]:.2f}x | "
                  f"{ms['torch'] / ms[best]:.2f}x | {flops / sparse_flops:.2f}x |  <!-- build {build_s:.1f}s -->",
                  flush=True)


if __name__ == "__main__":
    main()
