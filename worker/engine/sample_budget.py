"""How many synthetic inputs a job inverts when `synthetic_samples` is not given: 768 for a model as cheap as
ResNet-20 on CIFAR, falling with the square of the model's cost per image, in whole inversion batches, never
fewer than 128.

Inverting one input costs a forward and a backward pass per inversion step, so the synthesis time is about
samples x multiply-accumulates (MACs) per image; the layer-wise pass that follows scales the same way. The count
falls faster than the cost grows because the gain from more inputs shrinks as models get deeper and dearer:
ResNet-20 (4.1e7 MACs) gains from 128 -> 512 -> 768 inputs (docs/benchmarks/engine.md, sessions 6 and 7), ResNet-56
(1.25e8, 3x) did not gain from 256 (session 5) and keeps 128, so its job, the one the 10-minute target is set on,
does not grow. 1024 inputs measured no better than 768 on ResNet-20 (session 7).
"""
from __future__ import annotations

from worker.engine.layers import PrunableLayer

MIN_SAMPLES = 128
MAX_SAMPLES = 768  # measured best on ResNet-20 of 512 / 768 / 1024
STEP = 64  # the inversion batch: a partial last batch costs a whole batch's passes for fewer inputs
REFERENCE_MACS = 41_000_000  # ResNet-20 on CIFAR: gets MAX_SAMPLES


def macs_per_image(layers: list[PrunableLayer]) -> int:
    """Multiply-accumulates of one input through the model's convolutions and linear layers (the bulk of its cost)."""
    return sum(layer.module.weight.numel() * layer.positions for layer in layers)


def automatic_samples(macs: int) -> int:
    """Synthetic inputs for a model of `macs` per image: MAX_SAMPLES x (REFERENCE_MACS / macs)^2, in whole
    inversion batches, clamped to [MIN_SAMPLES, MAX_SAMPLES]."""
    wanted = int(MAX_SAMPLES * (REFERENCE_MACS / max(int(macs), 1)) ** 2)
    return max(MIN_SAMPLES, min(MAX_SAMPLES, wanted // STEP * STEP))


# The block stage gains from more inputs than the pruning needs: ResNet-56 128 -> 256 -> 512 (docs/benchmarks/engine.md,
# sessions 17-18). Its extra inputs are synthesized for it alone, so they are capped by what they cost: up to 512
# inputs and 4x the pruning set (a small test run stays small), and no more inverted input-MACs than ResNet-56's
# 512 (a model 4x dearer gets 128, an ImageNet-sized one none: minutes of synthesis and cached activations there).
BLOCK_STAGE_SAMPLES = 512
BLOCK_STAGE_MACS_BUDGET = 512 * 130_000_000  # ResNet-56 on CIFAR: 1.255e8 MACs per image; ResNet-18 at 224: 1.8e9


def block_stage_samples(macs: int, samples: int) -> int:
    """Inputs the block stage should see: at least the pruning set (`samples`), in whole inversion batches."""
    affordable = min(BLOCK_STAGE_SAMPLES, 4 * samples, BLOCK_STAGE_MACS_BUDGET // max(int(macs), 1))
    return max(samples, affordable // STEP * STEP)
