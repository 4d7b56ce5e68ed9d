"""Compression options: one dataclass, shared by the CLI, the worker and the API schema.

Add fields with defaults freely; never rename one (the API and stored jobs use these names).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

SyntheticMode = Literal["bn-inversion", "gaussian"]
LinearSparsity = Literal["dense", "unstructured", "2:4"]
Device = Literal["cpu", "cuda"]
ConnectivityAllocation = Literal["flops", "weights", "uniform"]

# The default compression-stage budget: a default ResNet-56 job (compression, then compiling and timing the sparse
# package, ~1.5 min more) ends within 10 minutes on a 2-core machine. Fast machines never reach it (3.8-7.5 min
# there); a 2-core AMD EPYC Zen 3 (AVX2) took 15.6 min without it, so there it cuts the block stage's extra inputs
# (docs/benchmarks/engine.md, session 20). Larger models get a warning saying what it cut.
DEFAULT_TIME_BUDGET_S = 480.0


@dataclass
class CompressionConfig:
    # Pattern pruning of 3x3 convs: each kernel keeps `entries` weights (centre included)
    # in one of `library_size` patterns chosen from the model's own weights.
    entries: int = 4
    library_size: int = 8
    # Connectivity pruning: fraction of the 3x3 convs removed as whole kernels, in [0, 1) (see below).
    connectivity: float = 0.0
    # Alternative to a uniform rate: overall 3x3-conv compression ratio (e.g. 4.5); per-layer
    # connectivity rates are then allocated by measured sensitivity. None = use `connectivity`.
    target_compression: float | None = None
    # What `connectivity` is a fraction of, and which kernels go (rates.py): "flops" removes that fraction of the
    # pattern-pruned layers' FLOPs, the kernels that cost their layer the least output energy per FLOP; "weights" that
    # fraction of their kernels, the cheapest per kernel; "uniform" that fraction of every layer's kernels (the
    # paper's). At 0.5 on ResNet-20 / -56 (2000 test images, no distillation): flops 81.95 / 86.95, weights 79.80 /
    # 87.15 (but ~25% more FLOPs kept), uniform 77.70 / 86.55 (docs/benchmarks/engine.md). Ignored when
    # target_compression is set.
    connectivity_allocation: ConnectivityAllocation = "flops"
    prune_first_conv: bool = False  # the 3-input-channel stem is tiny and sensitive
    prune_depthwise: bool = False
    linear_sparsity: LinearSparsity = "dense"  # 1x1 convs and Linear layers
    linear_rate: float = 0.5  # for "unstructured"
    # Synthetic data (never real data).
    synthetic: SyntheticMode = "bn-inversion"
    # Synthetic inputs to invert. None = automatic (sample_budget.py): 768 for a model as cheap as ResNet-20,
    # falling with the square of the cost per image, in batches of 64, at least 128 (ResNet-56: 128 as before: its
    # job time does not grow); an explicit value wins. The report's config shows the number run.
    synthetic_samples: int | None = None
    synthetic_steps: int = 100
    # Data-free recovery after pruning.
    # Masked distillation steps after pruning (0 = off), on the block stage's inputs when it ran, else on the
    # pruning inputs, each batch re-inverted one step first (extra.fresh_inputs, image_pool.py). None = automatic:
    # AUTO_RECOVERY_STEPS when whole kernels are removed (connectivity or target_compression), else 0. After the
    # block stage it polishes what the blocks reached: ResNet-56 at 50% connectivity mean drop 3.11 -> 3.00 over
    # three seeds (session 23), 3.38 -> 3.28 over two budget-bound jobs (session 24); pattern-only no gain. Without
    # a block stage +1.85 / +0.25 on ResNet-20 / -56 at 50% (session 3). docs/benchmarks/engine.md.
    recovery_steps: int | None = None
    # Its learning rate. None = automatic: AFTER_BLOCKS_DISTILL_LR after the block stage (at 1e-3 there it cost
    # 0.7 points on ResNet-56, session 5), DISTILL_LR when it runs instead of one.
    distill_lr: float | None = None
    bn_recalibration: bool = True  # re-estimate BatchNorm statistics of the pruned model on synthetic inputs
    # Layer-wise ADMM iterations per layer (0 = projection + masked least squares only).
    admm_iterations: int = 30
    # Held-out synthetic inputs (a different seed) for the fidelity report.
    fidelity_samples: int = 64
    # Overall wall-clock budget for the compression stage, seconds (None = no limit). The synthetic inputs (then
    # their steps) are cut to what half of it allows (synthesis_budget.py); block reconstruction gets 80% of
    # what is left, then distillation 80% of what remains (it shortens its schedule to fit). The service's workers
    # cap it at 60% of their task time limit.
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S
    # N x C x H x W for models that do not declare their input shape (batch dim ignored).
    input_shape: tuple[int, ...] | None = None
    device: Device = "cpu"
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


AUTO_RECOVERY_STEPS = 200
DISTILL_LR = 1e-3
AFTER_BLOCKS_DISTILL_LR = 1e-4


def removes_kernels(config: CompressionConfig) -> bool:
    return config.connectivity > 0 or config.target_compression is not None


def effective_recovery_steps(config: CompressionConfig) -> int:
    """The distillation steps a job runs: the configured number, or the automatic choice for None (distillation
    only when whole kernels are removed: pattern-only jobs measured no gain from it)."""
    if config.recovery_steps is not None:
        return config.recovery_steps
    return AUTO_RECOVERY_STEPS if removes_kernels(config) else 0


def effective_distill_lr(config: CompressionConfig, *, block_reconstruction: bool) -> float:
    if config.distill_lr is not None:
        return config.distill_lr
    return AFTER_BLOCKS_DISTILL_LR if block_reconstruction else DISTILL_LR
