"""Synthetic inputs for models without BatchNorm: the real `zerodata compress` CLI on the shared ONNX ResNet-20
(its BatchNorms folded into the convs, so synthesis falls back to prior-inversion), scored with ONNX Runtime on
the full CIFAR-10 test set, one row per synthesis seed. Extra `--set` items go to the CLI unchanged.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.onnx_inputs [--seeds 0,1] [--connectivity 0] \
        [--model /work/shared/models/resnet20_cifar10.onnx] [--out-dir /tmp/zd-onnx] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.cifar import load_cifar10_test
from benchmarks.shared_assets import SHARED_MODELS
from benchmarks.zoo_generalisation import compress, predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED_MODELS / "resnet20_cifar10.onnx"))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--connectivity", type=float, default=0.0)
    ap.add_argument("--out-dir", default="/tmp/zd-onnx")
    ap.add_argument("--set", action="append", default=[], help="passed to `zerodata compress --set`")
    args = ap.parse_args()
    torch.set_num_threads(1)
    source, out_dir = Path(args.model), Path(args.out_dir)
    x, y = load_cifar10_test()
    dense = 100.0 * (predictions(source, x) == y).float().mean().item()
    tag = "".join(f"_{item}" for item in args.set)
    tag = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in tag)[:120]
    for seed in (int(s) for s in args.seeds.split(",")):
        out = out_dir / "runs" / f"{source.stem}_c{args.connectivity}_s{seed}{tag}"
        report, seconds = compress(source, out, args.connectivity, seed, args.set)
        row = {"model": source.name, "set": args.set, "conn": args.connectivity, "seed": seed, "dense": dense,
               "seconds": round(seconds)}
        if "error" in report:
            row["error"] = report["error"]
        else:
            pruned = 100.0 * (predictions(out / f"model{source.suffix}", x) == y).float().mean().item()
            synthetic = report["compression"].get("synthetic") or {}
            row.update(pruned=pruned, drop=round(dense - pruned, 2), mode=synthetic.get("mode"),
                       cached=bool(synthetic.get("cached")))
        print(json.dumps(row), flush=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "results.jsonl", "a") as log:
            log.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
