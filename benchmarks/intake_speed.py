"""How long the intake checks take per upload (they run synchronously before a model is stored).

    .venv/bin/python -m benchmarks.intake_speed

Times `app.intake.inspect_upload` (detect + every check + summary, nothing executed) on the shared
models, plus a .pt2 padded with a stored 256 MiB member to show the cost of streaming every byte
through zipfile's CRC check. Prints a markdown table; median of several runs.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from app.intake import inspect_upload
from benchmarks.shared_assets import SHARED_MODELS

SHARED = SHARED_MODELS
RUNS = 5


def padded_copy(src: Path, dst: Path, pad_bytes: int) -> Path:
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, "w") as target:
        root = source.namelist()[0].split("/", 1)[0]
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr(f"{root}/extra/padding", os.urandom(pad_bytes))
    return dst


def median_seconds(path: Path) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        inspect_upload(path, max_bytes=1 << 33)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    files = [SHARED / name for name in ("resnet20_cifar10.pt2", "resnet56_cifar10.pt2",
                                        "resnet20_cifar10.onnx", "resnet56_cifar10.onnx")]
    with tempfile.TemporaryDirectory() as tmp:
        files.append(padded_copy(files[0], Path(tmp) / "resnet20_plus_256MiB.pt2", 256 << 20))
        print("| file | MiB | format | params | 3x3 convs | median ms | MiB/s |")
        print("|---|---|---|---|---|---|---|")
        for path in files:
            summary = inspect_upload(path, max_bytes=1 << 33)
            seconds = median_seconds(path)
            mib = path.stat().st_size / 2**20
            print(f"| {path.name} | {mib:.1f} | {summary.format} | {summary.params} | "
                  f"{len(summary.prunable_layers)} | {seconds * 1000:.1f} | {mib / seconds:.0f} |")


if __name__ == "__main__":
    main()
