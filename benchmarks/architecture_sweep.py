"""Does the whole pipeline run on architectures it was never built around? Each model of
benchmarks/unseen_models.py (untrained: this checks that jobs finish and what they report, not accuracy) is exported
the way most users export, at a fixed batch of 1 with each exporter's defaults (torch.export.export(model, (x,)),
torch.onnx.export(model, (x,), dynamo=True): BatchNorm folded, weights in a side file; torch.jit.trace), and goes
through the real `zerodata compress` CLI with compile and measure on and small budgets. One row per file: exit
code, wall time, and the CLI's last line (the error, or the batch-1 latencies).

    .venv/bin/python -m benchmarks.architecture_sweep [--models grouped,se_shuffle] [--formats pt2,onnx,ts] \
        [--work-dir /tmp/zerodata-sweep]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.unseen_models import UNSEEN, build

CLI = Path(sys.executable).with_name("zerodata")
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "ts": ".pt"}
SMALL_BUDGET = ["--samples", "64", "--steps", "10", "--set", "admm_iterations=5",
                "--set", 'extra={"block_reconstruction": {"steps": 10}}']


def export(model: torch.nn.Module, shape: tuple[int, ...], fmt: str, path: Path) -> None:
    x = torch.randn(*shape)
    if fmt == "pt2":
        torch.export.save(torch.export.export(model, (x,)), str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)  # verbose=False: no progress chatter
    else:
        torch.jit.save(torch.jit.trace(model, x), str(path))


def run_cli(path: Path, shape: tuple[int, ...], out: Path, home: Path) -> tuple[int, float, str]:
    env = {**os.environ, "HOME": str(home), "ZERODATA_KERNEL_CACHE": str(home / "kernels")}
    command = [str(CLI), "compress", str(path), "--out", str(out), "--force", "--quiet",
               "--input-shape", ",".join(map(str, shape)), *SMALL_BUDGET]
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    lines = (done.stdout + done.stderr).splitlines()
    picked = [line for line in lines if line.startswith(("Error", "batch-1 latency"))] or lines[-1:] or [""]
    return done.returncode, time.monotonic() - start, picked[-1][:220]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(UNSEEN))
    parser.add_argument("--formats", default="pt2,onnx,ts")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/zerodata-sweep"))
    args = parser.parse_args()
    files, outs = args.work_dir / "files", args.work_dir / "out"
    files.mkdir(parents=True, exist_ok=True)
    print("| model | format | exit | seconds | last line |\n|---|---|---|---|---|", flush=True)
    for name in args.models.split(","):
        model, shape = build(name)
        for fmt in args.formats.split(","):
            path = files / f"{name}{SUFFIX[fmt]}"
            try:
                export(model, shape, fmt, path)
            except Exception as exc:  # the exporter's own failure: not ours to fix, but worth a row
                print(f"| {name} | {fmt} | export failed | | {type(exc).__name__}: {str(exc)[:150]} |", flush=True)
                continue
            code, seconds, last = run_cli(path, shape, outs / f"{name}-{fmt}", args.work_dir / "home")
            print(f"| {name} | {fmt} | {code} | {seconds:.0f} | {last.replace('|', '/')} |", flush=True)


if __name__ == "__main__":
    main()
