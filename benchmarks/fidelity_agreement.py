"""Does label-free fidelity predict real fidelity? Agreement and KL between the pruned and the original model on
the real CIFAR-10 test images vs on held-out synthetic inputs inverted with several class-term weights.

    .venv/bin/python -m benchmarks.fidelity_agreement [--models resnet20] [--limit 2000] [--class-weights 0.05,0.5,2.0]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.nn import functional as F

from benchmarks.cifar import load_cifar10_test
from benchmarks.shared_assets import SHARED_MODELS
from worker.engine.compress import compress_module
from worker.engine.config import CompressionConfig
from worker.engine.formats import load_model
from worker.engine.synthetic import InversionSettings, synthesize_inputs
from worker.progress import NullProgress

INPUT_SHAPE = (1, 3, 32, 32)


@torch.no_grad()
def agreement(teacher, student, x) -> dict:
    p_t, log_s = F.softmax(teacher(x), 1), F.log_softmax(student(x), 1)
    return {"agreement": float((p_t.argmax(1) == log_s.argmax(1)).float().mean()),
            "kl": float(F.kl_div(log_s, p_t.clamp_min(1e-12).log(), reduction="batchmean", log_target=True)),
            "confidence": float(p_t.amax(1).median())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--connectivity", default="0.0,0.5")
    parser.add_argument("--class-weights", default="0.05,0.5,2.0")
    parser.add_argument("--samples", type=int, default=128, help="held-out synthetic inputs per class weight")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default="/tmp/zerodata-bench-cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = load_cifar10_test(limit=args.limit)
    print("| model | connectivity | inputs | top-1 agreement | mean KL | teacher's median top-1 probability |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        teacher = load_model(SHARED_MODELS / f"{name}_cifar10.pt2").module.eval()
        held = {w: synthesize_inputs(teacher, INPUT_SHAPE, "bn-inversion", args.samples, CompressionConfig().synthetic_steps,
                                     777, NullProgress(), cache_dir=args.cache_dir,
                                     settings=InversionSettings(class_weight=w)).images
                for w in (float(v) for v in args.class_weights.split(","))}
        for conn in (float(v) for v in args.connectivity.split(",")):
            config = dataclasses.replace(CompressionConfig(), connectivity=conn)
            student = compress_module(teacher, INPUT_SHAPE, config, NullProgress(), cache_dir=args.cache_dir).module.eval()
            for label, images in [("real test images", x)] + [(f"synthetic, class weight {w}", h) for w, h in held.items()]:
                r = agreement(teacher, student, images)
                print(f"| {name} | {conn} | {label} | {r['agreement']:.3f} | {r['kl']:.3f} | {r['confidence']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
