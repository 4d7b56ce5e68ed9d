"""Fit the synthetic-input stage into the job's wall-clock budget (`time_budget_s`).

Inverting inputs is most of a compression job: a forward and a backward pass per input per step. On CIFAR models
that is minutes, but an ImageNet-sized model multiplies it by the pixels: a default ResNet-18 job at 224x224 spent
~24 minutes on it on a 2-core worker (docs/benchmarks/engine.md, session 11), a ResNet-50 would spend over an
hour. So when a budget is given, an inversion step is timed on a few inputs first (inversion_modes.py) and the input
counts, then the steps, are cut until the synthesis is expected to take at most SYNTHESIS_SHARE of the budget; the
rest is left to the stages that follow (their cost grows with the input count too). The report says what was cut
and why. Extra inputs for the block stage (block_reconstruction.py) are the first thing cut: the pruning inputs
matter more; they are made last, re-planned at the rate the other inputs really ran (`replan_blocks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from worker.engine.inversion_modes import seconds_per_input_step

SYNTHESIS_SHARE = 0.5  # synthesis took 55-65% of the default ResNet-56 job's compression stage
MIN_SAMPLES = 32  # fewer inputs than this leave the layer-wise least squares of wide layers underdetermined
MIN_STEPS = 20
# The block stage's extra inputs are cut to a quarter of their steps before their count: for that stage 768 inputs
# of 50 steps and 1536 of 25 did as well as 384 of 100 (ResNet-56, docs/benchmarks/engine.md, sessions 18-19),
# while 256 inputs instead of 512 cost 0.15 points pattern-only and 0.5 at 0.5 connectivity.
BLOCK_STEPS_FLOOR = 0.25
SAMPLE_ROUNDING = 8
# A real inversion step also adds the image priors, jitter and an Adam step to what the probe times (the model and
# its BatchNorm term): ResNet-56, Zen 4, the probe read 3.1 / 4.3 / 4.8-5.3 ms per input-step in the three modes,
# real steps 3.0-3.3 / 3.8-3.9 / 4.4-4.6 (session 22). Fixed costs weigh more on tiny models.
STEP_OVERHEAD = 1.1


@dataclass(frozen=True)
class SynthesisPlan:
    samples: int
    steps: int
    holdout_samples: int
    holdout_steps: int
    seconds_per_input_step: float
    expected_s: float
    reduced_from: dict | None = None  # the settings asked for, when the budget cut them
    block_samples: int = 0  # extra inputs for the block stage only
    block_steps: int = 0

    def report(self) -> dict:
        out = {"seconds_per_input_step": round(self.seconds_per_input_step, 6), "expected_s": round(self.expected_s, 1)}
        if self.reduced_from:
            asked = self.reduced_from
            out["reduced_from"] = asked
            cuts = []
            if (asked["samples"], asked["steps"], asked["holdout_samples"]) != (self.samples, self.steps,
                                                                                 self.holdout_samples):
                cuts.append(f"the synthetic inputs from {asked['samples']} x {asked['steps']} steps to {self.samples} "
                            f"x {self.steps} (held-out fidelity inputs {asked['holdout_samples']} -> "
                            f"{self.holdout_samples})")
            if (asked.get("block_samples", 0), asked.get("block_steps", 0)) != (self.block_samples, self.block_steps):
                to = f"{self.block_samples} x {self.block_steps} steps" if self.block_samples else "none"
                cuts.append(f"the block stage's extra inputs from {asked['block_samples']} x {asked['block_steps']} "
                            f"steps to {to}")
            out["warning"] = (f"the time budget cut {' and '.join(cuts)} so that their synthesis takes about "
                              f"{self.expected_s:.0f} s; a larger budget may give a more accurate pruned model")
        return out


_PARTS = {"train": ("samples", "steps"), "holdout": ("holdout_samples", "holdout_steps"),
          "blocks": ("block_samples", "block_steps")}
_SHRINKING = ("train", "holdout")  # the block part is dropped, not shrunk to a floor


def _cost(plan: dict, cached: frozenset) -> int:
    return sum(plan.get(n, 0) * plan.get(s, 0) for part, (n, s) in _PARTS.items() if part not in cached)


def plan_synthesis(budget_s: float, per_input_step: float, samples: int, steps: int, holdout_samples: int,
                   holdout_steps: int, *, block_samples: int = 0, block_steps: int = 0,
                   cached: frozenset = frozenset()) -> SynthesisPlan:
    """The largest input counts (then steps) whose expected synthesis time fits SYNTHESIS_SHARE x budget_s.

    Parts already in the cache ("train", "holdout", "blocks") cost nothing and are never cut. The block stage's
    extra inputs go first, down to none. Then counts shrink, in proportion, to MIN_SAMPLES each (never above what
    was asked); then steps shrink to MIN_STEPS. When even that does not fit, the minimum runs: a budget is a limit
    on work, not a reason to fail a job."""
    asked = dict(samples=samples, steps=steps, holdout_samples=holdout_samples, holdout_steps=holdout_steps)
    if block_samples:
        asked.update(block_samples=block_samples, block_steps=block_steps)
    allowed = max(0.0, budget_s) * SYNTHESIS_SHARE / max(per_input_step, 1e-12)  # input-steps that fit
    plan = dict(asked)
    if block_samples and "blocks" not in cached and _cost(plan, cached) > allowed:
        spare = max(0.0, allowed - _cost({**plan, "block_samples": 0}, cached))
        fewest_steps = max(1, math.ceil(block_steps * BLOCK_STEPS_FLOOR))
        if spare >= block_samples * fewest_steps:  # every extra input, with fewer steps each
            plan["block_steps"] = int(spare / block_samples)
        else:
            fits = int(spare / fewest_steps) // SAMPLE_ROUNDING * SAMPLE_ROUNDING
            plan["block_samples"] = fits if fits >= MIN_SAMPLES else 0
            plan["block_steps"] = fewest_steps if plan["block_samples"] else block_steps
    for index, (floor, rounding) in enumerate(((MIN_SAMPLES, SAMPLE_ROUNDING), (MIN_STEPS, 1))):
        if _cost(plan, cached) <= allowed:
            break
        factor = allowed / _cost(plan, cached)
        for part in _SHRINKING:
            keys = _PARTS[part]
            if part not in cached:
                key = keys[index]
                want = int(plan[key] * factor) // rounding * rounding
                plan[key] = min(plan[key], max(floor, want))
    expected = _cost(plan, cached) * per_input_step
    return SynthesisPlan(**plan, seconds_per_input_step=per_input_step, expected_s=expected,
                         reduced_from=asked if plan != asked else None)


def replan_blocks(plan: SynthesisPlan, budget_s: float, spent_s: float, input_steps_done: int,
                  cached: frozenset) -> SynthesisPlan:
    """`plan` (made for `budget_s`) with the block stage's extra inputs re-fitted at the rate the inputs made so far
    really ran: `input_steps_done` input-steps in `spent_s`. The probe that priced the plan times a quarter of a
    second; on a busy host it read 5.6-8.5 ms per input-step for the same ResNet-56 in six jobs (session 24), so
    the extras got 31-69 steps and the synthesis ended 2-67 s short of its share."""
    asked = plan.reduced_from or {key: getattr(plan, key) for keys in _PARTS.values() for key in keys}
    if not asked.get("block_samples") or "blocks" in cached or input_steps_done <= 0:
        return plan
    rate = spent_s / input_steps_done
    # a budget whose share is what the synthesis share has left after spent_s
    refit = plan_synthesis(budget_s - spent_s / SYNTHESIS_SHARE, rate, plan.samples, plan.steps,
                           plan.holdout_samples, plan.holdout_steps, block_samples=asked["block_samples"],
                           block_steps=asked["block_steps"], cached=frozenset({"train", "holdout"}))
    final = replace(plan, block_samples=refit.block_samples, block_steps=refit.block_steps,
                    seconds_per_input_step=rate, expected_s=spent_s + refit.expected_s)
    cut = any(getattr(final, key) != value for key, value in asked.items())
    return replace(final, reduced_from=asked if cut else None)


def cached_parts(model: nn.Module, input_shape: tuple[int, ...], mode: str, parts: dict, *,
                 cache_dir=None) -> frozenset:
    """The parts ("train", "holdout", "blocks": synthesize_inputs keyword arguments, blocks may ask for 0 samples)
    the cache already holds."""
    from worker.engine.synthetic import is_cached

    return frozenset(part for part, args in parts.items()
                     if args["samples"] == 0 or is_cached(model, input_shape, mode, cache_dir=cache_dir, **args))


def fit_to_budget(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, remaining_s: float,
                  parts: dict, cached: frozenset, inversion_mode: str) -> SynthesisPlan:
    """plan_synthesis for cached_parts's parts, priced at a timed step in `inversion_mode` (none when all cached)."""
    train, holdout, blocks = parts["train"], parts["holdout"], parts["blocks"]
    per_step = 0.0 if len(cached) == len(parts) else STEP_OVERHEAD * seconds_per_input_step(
        model, input_shape, device, min(train["settings"].batch, train["samples"]), inversion_mode)
    return plan_synthesis(remaining_s, per_step, train["samples"], train["steps"], holdout["samples"],
                          holdout["steps"], block_samples=blocks["samples"], block_steps=blocks["steps"],
                          cached=cached)
