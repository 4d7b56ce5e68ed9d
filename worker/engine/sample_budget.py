"""How many synthetic inputs a job inverts when `synthetic_samples` is not given: as many as a fixed synthesis
budget buys at the model's cost per image, in whole inversion batches, between 128 and 512.

Inverting one input costs a forward and a backward pass per inversion step, so the synthesis time is about
samples x multiply-accumulates (MACs) per image; the layer-wise pass that follows scales the same way. The budget,
512 inputs of a ResNet-20-sized CIFAR model (4.1e7 MACs per image), is the largest that still gives ResNet-56
(1.25e8 MACs, the job the 10-minute target is set on) today's 128 inputs, so its job does not grow; ResNet-20 gets
512 (on 2000 test images, two synthesis seeds: pattern-only +0.20 / +1.10, 50% connectivity +1.70 / +1.30 over 128;
docs/benchmarks/engine.md, session 6). Models costing more than ResNet-56 keep 128.
"""
from __future__ import annotations

from worker.engine.layers import PrunableLayer

MIN_SAMPLES = 128
MAX_SAMPLES = 512  # the most measured
STEP = 64  # the inversion batch: a partial last batch costs a whole batch's passes for fewer inputs
BUDGET_MACS = 512 * 41_000_000


def macs_per_image(layers: list[PrunableLayer]) -> int:
    """Multiply-accumulates of one input through the model's convolutions and linear layers (the bulk of its cost)."""
    return sum(layer.module.weight.numel() * layer.positions for layer in layers)


def automatic_samples(macs: int) -> int:
    """Synthetic inputs for a model of `macs` per image: BUDGET_MACS worth, in whole inversion batches, clamped
    to [MIN_SAMPLES, MAX_SAMPLES]."""
    affordable = BUDGET_MACS // max(int(macs), 1)
    return max(MIN_SAMPLES, min(MAX_SAMPLES, affordable // STEP * STEP))
