"""Where a model's compile time goes: compile_model on a pruned model with every compiler run timed.

    .venv/bin/python -m benchmarks.kernel_compile_time PRUNED_MODEL.pt2 [--input 1,3,32,32]

Uses a fresh kernel cache each run (a cached library would skip the compiler).
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from kernels.graph_compile import compile_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--input", default="1,3,32,32", help="example input shape")
    args = ap.parse_args()
    runs: list[tuple[float, str, int]] = []  # seconds, kind, source bytes
    real_run = subprocess.run

    def timed_run(cmd, *a, **k):
        sources = [Path(c) for c in cmd if str(c).endswith(".cpp")]
        size = sum(p.stat().st_size for p in sources)  # measured now: the build's temp dir goes away
        start = time.perf_counter()
        try:
            return real_run(cmd, *a, **k)
        finally:
            if "-o" in cmd:
                kind = "link" if not sources else ("compile" if "-c" in cmd else "compile + link")
                runs.append((time.perf_counter() - start, kind, size))

    model = torch.export.load(args.model).module()
    example = torch.randn(*map(int, args.input.split(",")))
    subprocess.run = timed_run
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            compile_model(model, example, Path(tmp) / "package", cache_dir=Path(tmp) / "cache")
            total = time.perf_counter() - start
    finally:
        subprocess.run = real_run
    print(f"compile_model {total:.1f} s; {len(runs)} compiler runs, {sum(r[0] for r in runs):.1f} s summed")
    print("| seconds | run | source bytes |\n|---|---|---|")
    for seconds, kind, size in runs:
        print(f"| {seconds:.1f} | {kind} | {size} |")


if __name__ == "__main__":
    main()
