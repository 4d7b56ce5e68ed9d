"""Score pruned models on the real CIFAR-10 test set against the dense model they came from: top-1, its drop,
top-1 agreement and KL(dense || pruned). The KL moves far less by chance than top-1, so A/B runs should quote both.

    .venv/bin/python -m benchmarks.score_job JOB_OUT_DIR [MORE_DIRS_OR_MODEL_FILES ...] [--dense resnet56]

A job output directory is scored through its `model.*` file; any model file the engine loads also works.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.cifar import batched_logits, load_cifar10_test
from benchmarks.shared_assets import SHARED_MODELS
from worker.engine.formats import load_model


def model_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("model.*"))
        if not found:
            raise SystemExit(f"{path}: no model.* file (is it a job's output directory?)")
        return found[0]
    return path


@torch.no_grad()
def score(dense_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    log_p, log_q = dense_logits.log_softmax(1), logits.log_softmax(1)
    return {"top1": 100.0 * float((logits.argmax(1) == labels).float().mean()),
            "agreement": 100.0 * float((logits.argmax(1) == dense_logits.argmax(1)).float().mean()),
            "kl": float((log_p.exp() * (log_p - log_q)).sum(1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--dense", default="resnet56", help="shared model name (resnet20, resnet56) or a model file")
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10000)")
    args = parser.parse_args()
    dense_path = Path(args.dense) if Path(args.dense).exists() else SHARED_MODELS / f"{args.dense}_cifar10.pt2"
    x, y = load_cifar10_test(limit=args.limit)
    dense_logits = batched_logits(load_model(dense_path).module.eval(), x)
    dense_top1 = score(dense_logits, dense_logits, y)["top1"]
    print(f"dense {dense_path.name}: top-1 {dense_top1:.2f} on {len(x)} test images\n")
    print("| model | top-1 | drop | agreement with dense | KL(dense \\|\\| pruned) |")
    print("|---|---|---|---|---|")
    for path in args.paths:
        r = score(dense_logits, batched_logits(load_model(model_file(path)).module.eval(), x), y)
        print(f"| {path} | {r['top1']:.2f} | {dense_top1 - r['top1']:.2f} | {r['agreement']:.2f} | {r['kl']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
