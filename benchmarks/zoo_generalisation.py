"""Generalisation check: the real `zerodata compress` CLI at its defaults on three CIFAR-10 model families the
engine was never tuned on (benchmarks/zoo_models.py), each trained here on the FIRST 5000 test images and scored
on the LAST 5000 (never trained on). Each model goes in as .pt2 and as .onnx, pattern-only and at 0.5
connectivity, `--no-compile --no-measure`. The engine itself never sees data. The CLI caches synthetic inputs
between jobs (keyed by the model's graph and the synthesis settings), so a job whose inputs were already made
reads them from the cache; the table marks those.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.zoo_generalisation \
        [--models vgg11_q,mobilenetv2_h,preact_resnet10_silu] [--formats pt2,onnx] [--connectivity 0,0.5] \
        [--cache-dir /tmp/zerodata-zoo] [--seed 0] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.cifar import load_cifar10_test
from benchmarks.zoo_models import ZOO
from benchmarks.zoo_training import TRAIN_IMAGES, trained_model

CLI = Path(sys.executable).with_name("zerodata")


def export(model: torch.nn.Module, fmt: str, path: Path) -> Path:
    """.pt2 with a dynamic batch (as ../shared/models), or .onnx (input x, output logits, dynamic batch)."""
    example = (torch.randn(2, 3, 32, 32),)
    if not path.exists():
        tmp = path.with_name("tmp-" + path.name)
        if fmt == "pt2":
            program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, str(tmp))
        else:
            torch.onnx.export(model, example, str(tmp), input_names=["x"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False)
        tmp.replace(path)
    return path


@torch.no_grad()
def predictions(path: Path, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Top-1 class of every image, running the file as a user would (torch.export.load / ONNX Runtime)."""
    if path.suffix == ".pt2":
        module = torch.export.load(str(path)).module()
        run = lambda chunk: module(chunk)  # noqa: E731
    else:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda chunk: torch.from_numpy(session.run(None, {name: chunk.numpy()})[0])  # noqa: E731
    outs = []
    for i in range(0, len(x), batch):
        out = run(x[i:i + batch])
        out = out[0] if isinstance(out, (tuple, list)) else out
        outs.append(out.argmax(1))
    return torch.cat(outs)


def compress(model_path: Path, out: Path, connectivity: float, seed: int, sets: list[str]) -> tuple[dict, float]:
    """One CLI job at the defaults; the report and the job's wall time."""
    cmd = [str(CLI), "compress", str(model_path), "--out", str(out), "--force", "--quiet", "--no-compile",
           "--no-measure", "--seed", str(seed)]
    if connectivity:
        cmd += ["--connectivity", str(connectivity)]
    for item in sets:
        cmd += ["--set", item]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}, seconds
    return json.loads((out / "report.json").read_text()), seconds


def run(models: list[str], formats: list[str], connectivities: list[float], cache_dir: Path, seed: int,
        sets: list[str]) -> list[dict]:
    x, y = load_cifar10_test()
    held_x, held_y = x[TRAIN_IMAGES:], y[TRAIN_IMAGES:]
    rows = []
    for arch in models:
        model = trained_model(arch, x, y, seed, cache_dir)
        params = sum(p.numel() for p in model.parameters())
        for fmt in formats:
            source = export(model, fmt, cache_dir / f"{arch}_seed{seed}.{fmt}")
            dense_pred = predictions(source, held_x)
            dense = 100.0 * (dense_pred == held_y).float().mean().item()
            for conn in connectivities:
                tag = "".join(f"_{item}" for item in sets).replace("=", "-").replace(":", "-").replace("/", "-")
                out = cache_dir / "runs" / f"{arch}_seed{seed}_{fmt}_c{conn}{tag}"
                report, seconds = compress(source, out, conn, seed, sets)
                row = {"model": " ".join([arch, *sets]), "params": params, "format": fmt, "conn": conn, "dense": dense,
                       "seconds": seconds}
                if "error" in report:
                    row["error"] = report["error"]
                else:
                    pred = predictions(out / f"model.{fmt}", held_x)
                    row.update(pruned=100.0 * (pred == held_y).float().mean().item(),
                               agreement=(pred == dense_pred).float().mean().item(),
                               reported=report["fidelity"].get("top1_agreement"),
                               samples=report["config"].get("synthetic_samples"),
                               synthetic=(report["compression"].get("synthetic") or {}).get("mode"),
                               cached=bool((report["compression"].get("synthetic") or {}).get("cached")),
                               warnings=report.get("warnings", []))
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(cache_dir / "results.jsonl", "a") as log:  # every row of every run, for the docs
                    log.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | params | format | connectivity | dense top-1 | pruned top-1 | drop | agreement: report "
             "(synthetic) / real (held-out) | job wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['format']} | {r['conn']} | {r['dense']:.2f} |"
        if "error" in r:
            lines.append(f"{head} failed: {' '.join(r['error'])} | | | {r['seconds']:.0f} |")
            continue
        reported = f"{r['reported']:.3f}" if isinstance(r.get("reported"), float) else "n/a"
        lines.append(f"{head} {r['pruned']:.2f} | {r['dense'] - r['pruned']:.2f} | {reported} / "
                     f"{r['agreement']:.3f} | {r['seconds']:.0f}{' (inputs cached)' if r.get('cached') else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--formats", default="pt2,onnx")
    ap.add_argument("--connectivity", default="0,0.5")
    ap.add_argument("--cache-dir", default="/tmp/zerodata-zoo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="passed to `zerodata compress --set`")
    args = ap.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    rows = run(args.models.split(","), args.formats.split(","), [float(c) for c in args.connectivity.split(",")],
               Path(args.cache_dir), args.seed, args.set)
    print(table(rows))


if __name__ == "__main__":
    main()
