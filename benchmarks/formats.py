"""Model I/O on the shared models: load time, exactness against each format's stock runtime, save
time, and round-trip exactness of a hand-pruned model through the stock loader.

    .venv/bin/python benchmarks/formats.py [--models resnet20_cifar10 resnet56_cifar10]

TorchScript files are traced here from the .pt2 module (there is no shared TorchScript file).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.engine.formats import load_model, save_model  # noqa: E402
from benchmarks.shared_assets import SHARED_MODELS

SHARED = SHARED_MODELS


def stock_runner(path: Path, fmt: str):
    if fmt == "pt2":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x).detach().numpy()
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    script = torch.jit.load(str(path))
    return lambda x: script(x).detach().numpy()


def prune_by_hand(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
                m.weight[..., 0, :] = 0
                m.weight[..., 2, 2] = 0


def measure(path: Path, fmt: str, workdir: Path) -> dict:
    x = torch.randn(8, 3, 32, 32)
    t = time.perf_counter()
    loaded = load_model(path, input_shape=(1, 3, 32, 32))
    load_s = time.perf_counter() - t
    with torch.no_grad():
        load_diff = float(np.abs(loaded.module(x).numpy() - stock_runner(path, fmt)(x)).max())
    prune_by_hand(loaded.module)
    out = workdir / f"{path.stem}.out{loaded.extension}"
    t = time.perf_counter()
    save_model(loaded, loaded.module, out)
    save_s = time.perf_counter() - t
    with torch.no_grad():
        saved_diff = float(np.abs(loaded.module(x).numpy() - stock_runner(out, fmt)(x)).max())
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in loaded.module.modules())
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.module.modules())
    return dict(load_s=load_s, load_diff=load_diff, save_s=save_s, saved_diff=saved_diff, convs=convs, bns=bns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet20_cifar10", "resnet56_cifar10"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zerodata-formats-") as tmp:
        workdir = Path(tmp)
        for name in args.models:
            pt2 = SHARED / f"{name}.pt2"
            traced = workdir / f"{name}.pt"
            torch.jit.save(torch.jit.trace(load_model(pt2).module, torch.randn(1, 3, 32, 32)), str(traced))
            for path, fmt in ((pt2, "pt2"), (SHARED / f"{name}.onnx", "onnx"), (traced, "torchscript")):
                rows.append((name, fmt, measure(path, fmt, workdir)))
    print("| model | format | Conv2d / BatchNorm2d modules | load s | max abs diff vs stock runtime | "
          "save s | pruned round trip: max abs diff vs stock loader |")
    print("|---|---|---|---|---|---|---|")
    for name, fmt, r in rows:
        print(f"| {name} | {fmt} | {r['convs']} / {r['bns']} | {r['load_s']:.2f} | {r['load_diff']:.1e} | "
              f"{r['save_s']:.2f} | {r['saved_diff']:.1e} |")


if __name__ == "__main__":
    main()
