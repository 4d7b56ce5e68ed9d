"""A/B of block-stage variants on one saved layer-wise-pruned student, scored on the real CIFAR-10 test set.

The engine's prefix (synthesis, pattern library, rates, layer-wise ADMM, BatchNorm re-calibration) costs ~8 CPU
minutes on ResNet-56 at one thread; the block stage ~3. `prefix` runs `compress_module` at the defaults with the
block stage and the distillation off and saves the student, its masks and the training inputs; `blocks` then runs
`reconstruct_blocks` with each given BlockSettings variant on a fresh copy of that student, as compress_module
would, and prints top-1 and KL(dense || pruned) on the first LIMIT test images.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.engine_block_ab prefix --model resnet56 --seed 0 --out /tmp/engine
    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.engine_block_ab blocks /tmp/engine/A_resnet56_0.0_0.pt \\
        '[{}, {"cutmix_views": 4, "crop_views": 4}]' [--limit 10000]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmarks.cifar import batched_logits, load_cifar10_test
from benchmarks.shared_assets import SHARED_MODELS
from worker.engine.block_reconstruction import BlockSettings, reconstruct_blocks
from worker.engine.compress import compress_module, inversion_settings
from worker.engine.config import CompressionConfig
from worker.engine.formats import load_model
from worker.engine.synthetic import synthesize_inputs
from worker.progress import NullProgress

INPUT_SHAPE = (1, 3, 32, 32)


def frozen_model(name: str) -> torch.nn.Module:
    module = load_model(SHARED_MODELS / f"{name}_cifar10.pt2").module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def prefix(model: str, connectivity: float, seed: int, samples: int | None, out: Path, cache: Path) -> Path:
    module = frozen_model(model)
    cfg = dataclasses.replace(CompressionConfig(), connectivity=connectivity, seed=seed, synthetic_samples=samples,
                              recovery_steps=0, fidelity_samples=1, extra={"block_reconstruction": 0})
    cpu = time.process_time()
    result = compress_module(module, INPUT_SHAPE, cfg, NullProgress(), cache_dir=cache)
    cpu = time.process_time() - cpu
    # the same call compress_module made: a cache hit, so these are exactly the inputs it pruned with
    images = synthesize_inputs(module, INPUT_SHAPE, cfg.synthetic, result.config.synthetic_samples, cfg.synthetic_steps,
                               seed, NullProgress(), cache_dir=cache, settings=inversion_settings(cfg)).images
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"A_{model}_{connectivity}_{seed}.pt"
    torch.save({"model": model, "seed": seed, "state": result.module.state_dict(), "masks": result.masks,
                "images": images}, path)
    print(f"{path}: {len(images)} inputs, CPU {cpu:.0f} s, stages {result.report['seconds']}", flush=True)
    return path


def blocks(path: Path, variants: list[dict], limit: int) -> None:
    saved = torch.load(path, weights_only=False)
    x, y = load_cifar10_test(limit=limit)
    teacher = frozen_model(saved["model"])
    dense_logits = batched_logits(teacher, x)
    dense = 100.0 * (dense_logits.argmax(1) == y).float().mean().item()
    for variant in variants:
        student = frozen_model(saved["model"])
        student.load_state_dict(saved["state"])
        cpu = time.process_time()
        reconstruct_blocks(student, teacher, saved["images"], saved["masks"], BlockSettings(**variant), NullProgress(),
                           seed=saved["seed"])
        cpu = time.process_time() - cpu
        out = batched_logits(student, x)
        acc = 100.0 * (out.argmax(1) == y).float().mean().item()
        kl = F.kl_div(F.log_softmax(out, 1), F.log_softmax(dense_logits, 1), log_target=True, reduction="batchmean")
        print(f"{path.name} {json.dumps(variant)}: top-1 {acc:.2f} (dense {dense:.2f}, drop {dense - acc:.2f}) "
              f"KL {float(kl):.4f}, block stage CPU {cpu:.0f} s, {limit} test images", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prefix", help="layer-wise-pruned student at the defaults, saved with masks and inputs")
    p.add_argument("--model", default="resnet56")
    p.add_argument("--connectivity", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=None, help="synthetic inputs (default: the engine's automatic)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=None, help="synthetic-input cache (default: OUT/cache)")
    b = sub.add_parser("blocks", help="block-stage variants (JSON list of BlockSettings fields) on a saved student")
    b.add_argument("saved", type=Path)
    b.add_argument("variants", help='e.g. \'[{}, {"cutmix_views": 2, "crop_views": 2}]\'')
    b.add_argument("--limit", type=int, default=10000, help="first N test images")
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("AB_THREADS", "1")))
    if args.command == "prefix":
        prefix(args.model, args.connectivity, args.seed, args.samples, args.out, args.cache_dir or args.out / "cache")
    else:
        blocks(args.saved, json.loads(args.variants), args.limit)


if __name__ == "__main__":
    main()
