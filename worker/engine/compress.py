"""One entry point: prune a module with pattern + connectivity sparsity using only synthetic inputs.

synthesise -> pattern library -> per-layer rates -> layer-wise ADMM (sequential) -> recovery -> fidelity.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from worker.engine.admm import SELECTIONS
from worker.engine.block_reconstruction import BlockSettings, reconstruct_blocks
from worker.engine.config import (CompressionConfig, ConnectivityAllocation, LinearSparsity, SyntheticMode,
                                  effective_distill_lr, effective_recovery_steps)
from worker.engine.connectivity import check_rate
from worker.engine.errors import EngineError, InvalidConfigError, UnsupportedModelError
from worker.engine.fidelity import measure_fidelity
from worker.engine.image_pool import ImagePool, PoolSettings
from worker.engine.inversion_modes import choose_mode
from worker.engine.layers import CONV3X3, DEPTHWISE, FIRST_CONV, check_weights_finite, execution_order
from worker.engine.patterns import candidate_patterns, pattern_library, pattern_masks
from worker.engine.rates import connectivity_rates
from worker.engine.sample_budget import automatic_samples, block_stage_samples, macs_per_image
from worker.engine.recovery import distill, recalibrate_batchnorm
from worker.engine.layer_report import build_report
from worker.engine.sequential import PrunePlan, prune_sequentially, prunes
from worker.engine.synthesis_budget import cached_parts, fit_to_budget, replan_blocks
from worker.engine.synthetic import InversionSettings, synthesize_inputs
from worker.progress import Progress

HOLDOUT_SEED_OFFSET = 1_000_003  # fidelity inputs never overlap the inputs used for pruning
# Held-out inputs the teacher classifies confidently, as it does real data: with the weak default class term,
# agreement on them read 0.56 where real-data agreement was 0.90 (ResNet-20); with 2.0 it read 0.96 vs 0.91
# and 0.80 vs 0.80 at 50% connectivity (docs/benchmarks/engine.md, "Fidelity without labels").
HOLDOUT_CLASS_WEIGHT = 2.0
# Held-out inputs get half the inversion steps of the training inputs: on a pruned ResNet-56 (6 seeds each) their
# top-1 agreement read the same as with all the steps (0.959 both; real 0.951) and their KL closer to the real
# one (0.107 vs 0.075; real 0.124), for half the cost, a sixth of the synthesis stage (docs/benchmarks/engine.md).
HOLDOUT_STEP_FRACTION = 0.5
# Distillation's feature terms match each pruned conv's BatchNorm output ("output") or its input ("input": the residual
# stream at a block's first conv, which residual targets repair, rather than a branch they deliberately change).
DISTILL_FEATURES = "output"
# Block-wise reconstruction after the layer-wise pass (block_reconstruction.py): each residual block's kept weights
# tuned to the dense model's block outputs; on by default since session 4 (extra.block_reconstruction: 0 turns it
# off), with a CutMix and a random-crop copy of the inputs since session 8 (block_views.py). Its inputs decide how
# well it repairs: on ResNet-56 at 0.5 connectivity 128 REAL images there gave a drop of 2.57 against 4.00 on the
# 128 synthetic ones (the layer-wise pass on real ones: 3.14). Since session 17 it runs 300 steps instead of 100 on
# pairs of residual blocks and sees more inputs than the pruning set (the extra ones of another seed; since session
# 18 up to 512: sample_budget.block_stage_samples). ResNet-56, seeds 0 / 1: pairs and 300 steps took the drop at
# 0.5 connectivity from 4.00 / 3.98 to 3.30 / 3.55 (session 17, 128 inputs); 512 inputs instead of 256 took it from
# 3.35 / 3.22 to 2.73 / 2.84, pattern-only from 1.33 / 1.30 to 1.18 / 1.16 (docs/benchmarks/engine.md, session 18).
BLOCK_DEFAULTS = {"steps": 300, "min_layers": 4}
BLOCK_SEED_OFFSET = 2_000_003  # the block stage's extra inputs overlap neither the pruning nor the fidelity inputs


@dataclass
class CompressionResult:
    module: nn.Module
    masks: dict[str, torch.Tensor]
    report: dict
    fidelity: dict
    config: CompressionConfig  # as run: automatic choices (synthetic_samples) resolved, for the report


# Inputs not made from BatchNorm statistics say little about real ones: a quarter-width VGG-11 exported to ONNX
# with its BatchNorms folded read 0.969 agreement on gaussian inputs against 0.609 on real images, and 1.000 on
# prior-inverted ones against 0.905 (docs/benchmarks/engine.md, session 10).
GAUSSIAN_FIDELITY_WARNING = ("fidelity was measured on gaussian-noise inputs (no BatchNorm statistics to invert), "
                             "on which the pruned model agrees with the original far more often than on real data: "
                             "do not trust or gate on this agreement; check accuracy on your own data")
PRIOR_FIDELITY_WARNING = ("fidelity was measured on inputs inverted without BatchNorm statistics (the model has "
                          "none), which the model classifies far more consistently than real data: do not trust or "
                          "gate on this agreement; check accuracy on your own data")
FIDELITY_WARNINGS = {"gaussian": GAUSSIAN_FIDELITY_WARNING, "prior-inversion": PRIOR_FIDELITY_WARNING}


def validate_config(config: CompressionConfig, input_shape: tuple[int, ...]) -> None:
    candidate_patterns(config.entries)
    if not isinstance(config.library_size, int) or config.library_size < 1:
        raise InvalidConfigError(f"library_size must be a positive integer, got {config.library_size!r}")
    check_rate(config.connectivity, "connectivity")
    check_rate(config.linear_rate, "linear_rate")
    if config.target_compression is not None and not (isinstance(config.target_compression, (int, float))
                                                      and math.isfinite(config.target_compression)
                                                      and config.target_compression >= 1.0):
        raise InvalidConfigError(f"target_compression must be a ratio >= 1, got {config.target_compression!r}")
    for name in ("synthetic_samples", "fidelity_samples"):
        value = getattr(config, name)
        if name == "synthetic_samples" and value is None:
            continue  # automatic
        if not isinstance(value, int) or not 1 <= value <= 100_000:
            raise InvalidConfigError(f"{name} must be an integer in [1, 100000], got {value!r}")
    for name in ("synthetic_steps", "recovery_steps", "admm_iterations"):
        value = getattr(config, name)
        if name == "recovery_steps" and value is None:
            continue  # automatic
        if not isinstance(value, int) or not 0 <= value <= 1_000_000:
            raise InvalidConfigError(f"{name} must be an integer in [0, 1000000], got {value!r}")
    if config.distill_lr is not None and not (isinstance(config.distill_lr, (int, float))
                                              and math.isfinite(config.distill_lr) and 0 < config.distill_lr <= 1):
        raise InvalidConfigError(f"distill_lr must be a learning rate in (0, 1], got {config.distill_lr!r}")
    for name, choices in (("connectivity_allocation", ConnectivityAllocation), ("synthetic", SyntheticMode),
                          ("linear_sparsity", LinearSparsity)):
        if getattr(config, name) not in get_args(choices):
            raise InvalidConfigError(f"{name} must be one of {', '.join(get_args(choices))}, "
                                     f"got {getattr(config, name)!r}")
    if len(input_shape) < 2 or any((not isinstance(d, int)) or d < 1 or d > 65536 for d in input_shape):
        raise InvalidConfigError(f"input shape must be positive integers (N, C, ...), got {tuple(input_shape)!r}")
    if math.prod(input_shape[1:]) > 64 * 1024 * 1024:
        raise InvalidConfigError(f"input shape {tuple(input_shape)} is too large")
    inversion_settings(config)
    pool_settings(config)
    block_settings(config)
    if not isinstance(config.extra.get("bn_correction", False), bool):
        raise InvalidConfigError("extra.bn_correction must be true or false")
    if not isinstance(config.extra.get("residual_targets", False), bool):
        raise InvalidConfigError("extra.residual_targets must be true or false")
    if not isinstance(config.extra.get("depthwise_refit", False), bool):
        raise InvalidConfigError("extra.depthwise_refit must be true or false")
    if config.extra.get("mask_selection", "euclidean") not in SELECTIONS:
        raise InvalidConfigError(f"extra.mask_selection must be one of {', '.join(SELECTIONS)}, "
                                 f"got {config.extra.get('mask_selection')!r}")
    if config.extra.get("distill_features", DISTILL_FEATURES) not in ("output", "input"):
        raise InvalidConfigError(f"extra.distill_features must be output or input, got {config.extra.get('distill_features')!r}")
    if config.extra.get("method", "admm") not in METHODS:
        raise InvalidConfigError(f"extra.method must be one of {', '.join(METHODS)}, got {config.extra.get('method')!r}")


METHODS = ("admm", "magnitude", "magnitude-only")
_INVERSION_LIMITS = {"batch": (1, 4096), "lr": (1e-6, 10.0), "first_bn_weight": (0.0, 1e4), "tv_weight": (0.0, 1e3),
                     "l2_weight": (0.0, 1e3), "class_weight": (0.0, 1e4), "jitter": (0, 64), "low_res_fraction": (0.0, 0.95),
                     "noise_decay": (0.0, 3.0)}


_POOL_LIMITS = {"inversion_steps": (0, 100), "lr": (1e-6, 10.0), "competition_weight": (0.0, 1e3)}


def inversion_settings(config: CompressionConfig) -> InversionSettings:
    """BN-inversion knobs from config.extra["inversion"], each checked: unknown keys and odd values are refused."""
    return _checked_settings(config, "inversion", InversionSettings, _INVERSION_LIMITS)


def pool_settings(config: CompressionConfig) -> PoolSettings:
    """Distillation-time re-inversion knobs from config.extra["fresh_inputs"] (see image_pool.py)."""
    return _checked_settings(config, "fresh_inputs", PoolSettings, _POOL_LIMITS)


_BLOCK_LIMITS = {"steps": (0, 100_000), "lr": (1e-6, 1.0), "batch": (1, 4096), "min_layers": (1, 64),
                 "bn_affine": (0, 1), "flip": (0, 1), "shifted_views": (0, 16), "cutmix_views": (0, 16),
                 "crop_views": (0, 16), "after_activation": (0, 1),
                 "teacher_input": (0, 1), "inputs": (0, 100_000)}


def depthwise_connectivity_note(other_layers: bool) -> str:
    return ("depthwise layers are pattern-pruned only (a depthwise kernel is a whole channel: removing it kills "
            "the channel); connectivity applies to " + ("the other 3x3 convolutions" if other_layers else
                                                         "no layer of this model, so it removed nothing"))


def block_settings(config: CompressionConfig, macs: int | None = None) -> BlockSettings:
    """extra.block_reconstruction: steps per block (an integer) or a mapping of BlockSettings fields, over
    BLOCK_DEFAULTS and, for a model of `macs` per image (config.synthetic_samples resolved), its input count."""
    inputs = 0 if macs is None else block_stage_samples(macs, config.synthetic_samples or 0)
    given = config.extra.get("block_reconstruction", {}) if isinstance(config.extra, dict) else {}
    if isinstance(given, int) and not isinstance(given, bool):
        given = {"steps": given}
    if isinstance(given, dict):
        given = {**BLOCK_DEFAULTS, "inputs": inputs, **given}
    return _checked_settings(config, "block_reconstruction", BlockSettings, _BLOCK_LIMITS, given=given)


def _checked_settings(config: CompressionConfig, key: str, cls, limits: dict, given=None):
    if given is None:
        given = config.extra.get(key, {}) if isinstance(config.extra, dict) else None
    if not isinstance(given, dict):
        raise InvalidConfigError(f"extra must be a mapping and extra.{key} a mapping of settings"
                                 + (" or a number of steps" if key == "block_reconstruction" else ""))
    defaults = cls()
    for name, value in given.items():
        if name not in limits:
            raise InvalidConfigError(f"unknown {key} setting {name!r}; known: {', '.join(limits)}")
        lo, hi = limits[name]
        want = type(getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (want is int and not isinstance(value, int)) \
                or not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidConfigError(f"{key} setting {name} must be a {want.__name__} in [{lo}, {hi}], got {value!r}")
    return cls(**given)


def select_device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InvalidConfigError("device 'cuda' was requested but no CUDA device is available on this worker")
        return torch.device("cuda")
    if name != "cpu":
        raise InvalidConfigError(f"device must be cpu or cuda, got {name!r}")
    return torch.device("cpu")


def _budget_left(config: CompressionConfig, started: float) -> float | None:
    """A recovery stage's time budget: 80% of what the job's budget has left, a margin for what follows."""
    if config.time_budget_s is None:
        return None
    return max(0.0, config.time_budget_s - (time.monotonic() - started)) * 0.8


def _distill(student: nn.Module, teacher: nn.Module, images: torch.Tensor, masks: dict[str, torch.Tensor],
             steps: int, three: list, config: CompressionConfig, inversion: InversionSettings, inputs_mode: str, *,
             after_blocks: bool, progress: Progress, time_budget_s: float | None) -> dict:
    """Masked distillation as a job runs it. After the block stage it polishes on the block stage's fixed inputs
    (re-inverting its batches there measured no better for twice the time, session 23) unless extra.fresh_inputs
    asks otherwise; without one, each batch is re-inverted first when the inputs came from BatchNorm statistics."""
    feature_on = config.extra.get("distill_features", DISTILL_FEATURES)
    feature_layers = [l.bn_name or l.name for l in three] if feature_on == "output" else [l.name for l in three]
    fresh = pool_settings(config)
    re_invert = fresh.inversion_steps > 0 and inputs_mode == "bn-inversion" and \
        (not after_blocks or "fresh_inputs" in config.extra)
    pool = ImagePool(teacher, images, fresh, inversion, seed=config.seed) if re_invert else None
    lr = effective_distill_lr(config, block_reconstruction=after_blocks)
    try:
        report = distill(student, teacher, images, {k: v.to(images.device) for k, v in masks.items()},
                         steps, progress, lr=lr, feature_layers=feature_layers,
                         feature_weight=config.extra.get("feature_weight", 1.0), time_budget_s=time_budget_s,
                         seed=config.seed, pool=pool, feature_on=feature_on)
    finally:
        if pool is not None:
            pool.close()
    fresh_steps = pool.steps_done if pool is not None else 0
    return report | {"lr": lr, "inputs": len(images), "fresh_input_steps": fresh_steps}


def compress_module(module: nn.Module, input_shape: tuple[int, ...], config: CompressionConfig,
                    progress: Progress, *, cache_dir: Path | None = None) -> CompressionResult:
    input_shape = tuple(input_shape)
    validate_config(config, input_shape)
    device = select_device(config.device)
    check_weights_finite(module)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    teacher = copy.deepcopy(module).to(device).eval()
    student = copy.deepcopy(module).to(device).eval()
    for p in list(teacher.parameters()) + list(student.parameters()):
        p.requires_grad_(False)
    layers = execution_order(student, torch.zeros(2, *input_shape[1:], device=device))
    macs = macs_per_image(layers)
    if config.synthetic_samples is None:
        config = replace(config, synthetic_samples=automatic_samples(macs))
    plan = PrunePlan(torch.zeros(0, 9), {}, admm_iterations=config.admm_iterations,
                     linear_sparsity=config.linear_sparsity, linear_rate=config.linear_rate,
                     method=config.extra.get("method", "admm"), bn_correction=config.extra.get("bn_correction", True),
                     selection=config.extra.get("mask_selection", "euclidean"),
                     residual_targets=config.extra.get("residual_targets", True))
    pruned = [l for l in layers if prunes(l, plan, config)]
    three = [l for l in pruned if l.kind in (CONV3X3, FIRST_CONV)]
    depthwise = [l for l in pruned if l.kind == DEPTHWISE]
    if not three and not pruned:
        raise UnsupportedModelError("the model has no 3x3 convolutions (groups=1) to pattern-prune"
                                    + ("" if layers else " and no Conv2d/Linear layers at all"))

    t = time.monotonic()
    inversion = inversion_settings(config)
    train_args = dict(samples=config.synthetic_samples, steps=config.synthetic_steps, seed=config.seed,
                      settings=inversion)
    holdout_args = dict(samples=config.fidelity_samples,
                        steps=math.ceil(config.synthetic_steps * HOLDOUT_STEP_FRACTION),
                        seed=config.seed + HOLDOUT_SEED_OFFSET,
                        settings=replace(inversion, class_weight=max(inversion.class_weight, HOLDOUT_CLASS_WEIGHT)))
    blocks = block_settings(config, macs)
    block_args = dict(train_args, seed=config.seed + BLOCK_SEED_OFFSET,
                      samples=max(0, blocks.inputs - config.synthetic_samples) if blocks.steps > 0 else 0)
    parts = {"train": train_args, "holdout": holdout_args, "blocks": block_args}
    cached = cached_parts(teacher, input_shape, config.synthetic, parts, cache_dir=cache_dir)
    inversion_mode = "contiguous" if len(cached) == len(parts) else choose_mode(
        teacher, input_shape, device, min(inversion.batch, config.synthetic_samples))
    budget_plan = None
    if config.time_budget_s is not None and config.synthetic != "gaussian":
        progress.update("synthesize", 0, 1, "timing one inversion step for the time budget")
        synthesis_window = config.time_budget_s - (time.monotonic() - started)
        budget_plan = fit_to_budget(teacher, input_shape, device, synthesis_window, parts, cached, inversion_mode)
        train_args.update(samples=budget_plan.samples, steps=budget_plan.steps)
        holdout_args.update(samples=budget_plan.holdout_samples, steps=budget_plan.holdout_steps)
        config = replace(config, synthetic_samples=budget_plan.samples, synthetic_steps=budget_plan.steps,
                         fidelity_samples=budget_plan.holdout_samples)
    synthesis = dict(progress=progress, cache_dir=cache_dir, inversion_mode=inversion_mode)
    inverting = time.monotonic()
    train = synthesize_inputs(teacher, input_shape, config.synthetic, **synthesis, **train_args)
    holdout = synthesize_inputs(teacher, input_shape, config.synthetic, **synthesis, **holdout_args)
    if budget_plan is not None:  # price the extra inputs at the rate these really ran, not the probe's
        input_steps = sum(args["samples"] * args["steps"] for part, args in (("train", train_args),
                          ("holdout", holdout_args)) if part not in cached)
        budget_plan = replan_blocks(budget_plan, synthesis_window, time.monotonic() - inverting, input_steps,
                                    cached)
        block_args.update(samples=budget_plan.block_samples, steps=min(budget_plan.block_steps, budget_plan.steps))
    extra = synthesize_inputs(teacher, input_shape, config.synthetic, **synthesis, **block_args) \
        if block_args["samples"] else None
    images, held = train.images.to(device), holdout.images.to(device)
    block_images = images if extra is None else torch.cat([images, extra.images.to(device)])
    seconds["synthesize"] = time.monotonic() - t

    t = time.monotonic()
    library = pattern_library([l.module.weight for l in three + depthwise], config.entries,
                              config.library_size) if three or depthwise else []
    plan.library_masks = pattern_masks(library, device=device) if library else torch.zeros(0, 9)
    plan.rates = connectivity_rates(teacher, three, layers, images, plan.library_masks, config)
    # Depthwise layers keep every kernel: a removed depthwise kernel is a dead channel (MobileNetV2 with 0.5 on
    # them: 57.18 -> 23.50, docs/benchmarks/engine.md, session 10).
    plan.rates.update({l.name: 0.0 for l in depthwise})
    notes = [depthwise_connectivity_note(bool(three))] if depthwise and (config.connectivity or
                                                                          config.target_compression) else []
    results = prune_sequentially(student, teacher, layers, images, plan, config, progress)
    seconds["prune"] = time.monotonic() - t

    t = time.monotonic()
    recovery: dict = {}
    masks = {f"{name}.weight": r["result"].mask.to(torch.bool).cpu() for name, r in results.items()}
    if config.bn_recalibration and any(isinstance(m, nn.BatchNorm2d) for m in student.modules()):
        recovery["bn_recalibrated"] = recalibrate_batchnorm(student, teacher, images)
    if blocks.steps > 0:
        recovery["block_reconstruction"] = reconstruct_blocks(student, teacher, block_images, masks, blocks,
                                                              progress, time_budget_s=_budget_left(config, started),
                                                              seed=config.seed)
        recovery["block_reconstruction"]["inputs"] = len(block_images)
        if extra is not None:
            recovery["block_reconstruction"]["extra_inputs"] = extra.info
    recovery_steps = effective_recovery_steps(config)
    if recovery_steps > 0:
        recovery["distillation"] = _distill(student, teacher, block_images if blocks.steps > 0 else images, masks,
                                            recovery_steps, three, config, inversion, train.info["mode"],
                                            after_blocks=blocks.steps > 0, progress=progress,
                                            time_budget_s=_budget_left(config, started))
    seconds["recover"] = time.monotonic() - t

    t = time.monotonic()
    progress.update("fidelity", 0, 1, f"{len(held)} held-out synthetic inputs")
    fidelity = measure_fidelity(teacher, student, held, [l.name for l in pruned])
    if holdout.info["mode"] in FIDELITY_WARNINGS:
        fidelity["warning"] = FIDELITY_WARNINGS[holdout.info["mode"]]
    seconds["fidelity"] = time.monotonic() - t
    progress.update("fidelity", 1, 1, "done")

    try:
        report = build_report(student, layers, pruned, results, library, plan.rates, config, train.info, seconds)
    except ValueError as exc:  # the structure check failed: an engine bug, never ship such a model
        raise EngineError(f"internal error: pruned weights break the pattern structure ({exc})") from exc
    report["recovery"] = recovery
    report["warnings"] = notes
    report["fidelity_inputs"] = holdout.info
    if budget_plan is not None:
        report["synthesis_budget"] = budget_plan.report()
    student = student.cpu().eval()
    return CompressionResult(student, masks, report, fidelity, config)
