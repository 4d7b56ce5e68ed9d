"""How held-out fidelity inputs should be made: label-free agreement and KL of an already pruned model on
held-out synthetic inputs of several sizes / step counts / seeds, against the same numbers on the real test set.

    .venv/bin/python -m benchmarks.fidelity_holdout --dense ../shared/models/resnet56_cifar10.pt2 \
        --pruned OUT/model.pt2 --variants 64:100:3000003,64:50:3000003

Each variant is samples:steps:seed, inverted with the held-out class weight the engine uses.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from benchmarks.cifar import batched_logits, load_cifar10_test
from worker.engine.compress import HOLDOUT_CLASS_WEIGHT
from worker.engine.formats import load_model
from worker.engine.synthetic import InversionSettings, synthesize_inputs
from worker.progress import NullProgress

@torch.no_grad()
def compare(teacher, student, x: torch.Tensor) -> tuple[float, float, float]:
    t, s = batched_logits(teacher, x), batched_logits(student, x)
    kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)
    return float((t.argmax(1) == s.argmax(1)).float().mean()), float(kl), float(F.softmax(t, 1).amax(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", required=True)
    ap.add_argument("--pruned", required=True)
    ap.add_argument("--variants", required=True, help="comma-separated samples:steps:seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default="/tmp/zerodata-holdout-cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_model(args.dense).module.eval()
    student = torch.export.load(args.pruned).module()
    shape = (1, 3, 32, 32)
    print("| inputs | samples | steps | seed | synthesis s | top-1 agreement | mean KL | teacher confidence |")
    print("|---|---|---|---|---|---|---|---|")
    x, _ = load_cifar10_test()
    print("| real test set | %d | | | | %.3f | %.3f | %.3f |" % (len(x), *compare(teacher, student, x)), flush=True)
    for variant in args.variants.split(","):
        samples, steps, seed = (int(v) for v in variant.split(":"))
        start = time.perf_counter()
        held = synthesize_inputs(teacher, shape, "bn-inversion", samples, steps, seed, NullProgress(),
                                 cache_dir=args.cache_dir,
                                 settings=InversionSettings(class_weight=HOLDOUT_CLASS_WEIGHT)).images
        seconds = time.perf_counter() - start
        print("| synthetic | %d | %d | %d | %.0f | %.3f | %.3f | %.3f |"
              % (samples, steps, seed, seconds, *compare(teacher, student, held)), flush=True)


if __name__ == "__main__":
    main()
