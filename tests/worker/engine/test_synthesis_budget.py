import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from worker.engine.compress import compress_module
from worker.engine.config import CompressionConfig
from worker.engine.synthesis_budget import MIN_SAMPLES, MIN_STEPS, SYNTHESIS_SHARE, plan_synthesis, replan_blocks
from worker.progress import RecordingProgress

ASKED = dict(samples=128, steps=100, holdout_samples=64, holdout_steps=50)  # 16,000 input-steps


def _plan(budget_s, per_step=0.01, **kwargs):
    return plan_synthesis(budget_s, per_step, *ASKED.values(), **kwargs)


def test_a_budget_that_fits_changes_nothing():
    plan = _plan(16_000 * 0.01 / SYNTHESIS_SHARE)
    assert (plan.samples, plan.steps, plan.holdout_samples, plan.holdout_steps) == tuple(ASKED.values())
    assert plan.reduced_from is None and "warning" not in plan.report()
    assert plan.expected_s == pytest.approx(160.0)


def test_inputs_shrink_first_in_proportion_then_steps():
    plan = _plan(8_000 * 0.01 / SYNTHESIS_SHARE)  # half the work fits
    assert (plan.samples, plan.holdout_samples) == (64, 32) and (plan.steps, plan.holdout_steps) == (100, 50)
    assert plan.expected_s <= 80.0 + 1e-9
    plan = _plan(2_000 * 0.01 / SYNTHESIS_SHARE)  # an eighth: counts at their floor, then fewer steps
    assert (plan.samples, plan.holdout_samples) == (MIN_SAMPLES, MIN_SAMPLES)
    assert MIN_STEPS <= plan.steps < 100 and plan.holdout_steps < 50
    assert plan.expected_s <= 20.0 + 1e-9
    assert plan.reduced_from == ASKED
    assert "time budget cut the synthetic inputs from 128 x 100" in plan.report()["warning"]


def test_a_hopeless_budget_runs_the_minimum_instead_of_failing():
    for budget in (0.0, -5.0, 1e-9):
        plan = _plan(budget)
        assert (plan.samples, plan.steps) == (MIN_SAMPLES, MIN_STEPS)
        assert (plan.holdout_samples, plan.holdout_steps) == (MIN_SAMPLES, MIN_STEPS)


def test_never_more_than_asked_and_cached_parts_are_free_and_kept():
    small = plan_synthesis(0.0, 1.0, 8, 4, 8, 2)  # below every floor already
    assert (small.samples, small.steps, small.holdout_samples, small.holdout_steps) == (8, 4, 8, 2)
    plan = _plan(12_800 * 0.01 / SYNTHESIS_SHARE, cached=frozenset({"holdout"}))  # the training set alone fits
    assert plan.reduced_from is None and plan.expected_s == pytest.approx(128.0)
    plan = _plan(0.0, cached=frozenset({"train"}))
    assert (plan.samples, plan.steps) == (128, 100) and plan.holdout_samples == MIN_SAMPLES
    assert _plan(0.0, cached=frozenset({"train", "holdout"})).reduced_from is None


def test_the_block_stages_extra_inputs_go_first_and_whole():
    plan = _plan(16_000 * 0.01 / SYNTHESIS_SHARE, block_samples=128, block_steps=100)  # all but the extras fit
    assert plan.block_samples == 0 and (plan.samples, plan.holdout_samples) == (128, 64)
    assert plan.report()["warning"].startswith(
        "the time budget cut the block stage's extra inputs from 128 x 100 steps to none so")
    plan = _plan((16_000 + 9_600) * 0.01 / SYNTHESIS_SHARE, block_samples=128, block_steps=100)
    assert (plan.block_samples, plan.block_steps) == (128, 75) and plan.samples == 128  # fewer steps first
    assert "extra inputs from 128 x 100 steps to 128 x 75 steps" in plan.report()["warning"]
    plan = _plan((16_000 + 1_600) * 0.01 / SYNTHESIS_SHARE, block_samples=128, block_steps=100)
    assert (plan.block_samples, plan.block_steps) == (64, 25)  # then, at a quarter of the steps, what fits
    plan = _plan((16_000 + 12_800) * 0.01 / SYNTHESIS_SHARE, block_samples=128, block_steps=100)
    assert plan.block_samples == 128 and plan.reduced_from is None
    cached = _plan(0.0, block_samples=128, block_steps=100, cached=frozenset({"blocks"}))
    assert cached.block_samples == 128  # already made: free, never cut


def test_the_extra_inputs_are_re_planned_at_the_rate_really_measured():
    budget = (16_000 + 6_400) * 0.01 / SYNTHESIS_SHARE  # at the probe's 0.01 s the extras get 50 of 100 steps
    plan = _plan(budget, block_samples=128, block_steps=100)
    assert (plan.block_samples, plan.block_steps) == (128, 50)
    faster = replan_blocks(plan, budget, 16_000 * 0.008, 16_000, frozenset())  # the real steps ran 20% faster
    assert (faster.block_samples, faster.block_steps) == (128, 93)  # (224 - 128) s left / (128 x 0.008 s)
    assert faster.seconds_per_input_step == pytest.approx(0.008) and faster.expected_s <= budget * SYNTHESIS_SHARE
    assert "to 128 x 93 steps" in faster.report()["warning"]
    slower = replan_blocks(plan, budget, 16_000 * 0.012, 16_000, frozenset())  # 20% slower: 32 s left
    assert (slower.block_samples, slower.block_steps) == (104, 25)  # a quarter of the steps, then fewer inputs
    roomy = replan_blocks(plan, budget, 16_000 * 0.004, 16_000, frozenset())  # every asked step fits
    assert (roomy.block_samples, roomy.block_steps) == (128, 100) and roomy.reduced_from is None
    hopeless = replan_blocks(plan, budget, 16_000 * 0.02, 16_000, frozenset())  # no time left at all
    assert hopeless.block_samples == 0 and (hopeless.samples, hopeless.steps) == (128, 100)
    assert replan_blocks(plan, budget, 10.0, 0, frozenset()) == plan  # everything came from the cache
    assert replan_blocks(plan, budget, 300.0, 16_000, frozenset({"blocks"})) == plan  # extras already made


def test_a_tight_budget_cuts_the_synthesis_and_says_so(tmp_path):
    cfg = CompressionConfig(synthetic_samples=64, synthetic_steps=40, fidelity_samples=48, admm_iterations=2,
                            time_budget_s=1e-3, extra={"inversion": {"batch": 16}, "block_reconstruction": 0})
    result = compress_module(tiny_resnet(), INPUT_SHAPE, cfg, RecordingProgress(), cache_dir=tmp_path)
    budget = result.report["synthesis_budget"]
    assert budget["reduced_from"] == dict(samples=64, steps=40, holdout_samples=48, holdout_steps=20)
    assert (result.config.synthetic_samples, result.config.synthetic_steps) == (MIN_SAMPLES, MIN_STEPS)
    assert result.config.fidelity_samples == MIN_SAMPLES
    assert result.report["synthetic"]["samples"] == MIN_SAMPLES and result.report["synthetic"]["steps"] == MIN_STEPS
    assert result.fidelity["samples"] == MIN_SAMPLES
    assert "time budget" in budget["warning"]


def test_a_job_prices_its_extra_inputs_at_the_rate_its_other_inputs_ran(tmp_path, monkeypatch):
    from worker.engine import compress

    calls = []

    def spy(plan, budget_s, spent_s, input_steps, cached):
        calls.append((plan, spent_s, input_steps))
        return replan_blocks(plan, budget_s, spent_s, input_steps, cached)
    monkeypatch.setattr(compress, "replan_blocks", spy)
    cfg = CompressionConfig(synthetic_samples=16, synthetic_steps=6, fidelity_samples=8, admm_iterations=2,
                            time_budget_s=600.0, connectivity=0.5,
                            extra={"inversion": {"batch": 8}, "block_reconstruction": {"steps": 2, "inputs": 32}})
    result = compress_module(tiny_resnet(), INPUT_SHAPE, cfg, RecordingProgress(), cache_dir=tmp_path)
    (plan, spent_s, input_steps), = calls
    assert input_steps == 16 * 6 + 8 * 3 and spent_s > 0  # the pruning and held-out inputs (half the steps)
    budget = result.report["synthesis_budget"]
    assert budget["seconds_per_input_step"] == pytest.approx(spent_s / input_steps, abs=1e-6)  # rounded there
    extra = result.report["recovery"]["block_reconstruction"]["extra_inputs"]
    assert (extra["samples"], extra["steps"]) == (16, 6)  # a roomy budget: every asked extra input and step


def test_without_a_budget_nothing_is_timed_or_cut(tmp_path, monkeypatch):
    from worker.engine import synthesis_budget

    def no_timing(*args, **kwargs):
        raise AssertionError("an inversion step was timed without a budget")
    monkeypatch.setattr(synthesis_budget, "seconds_per_input_step", no_timing)
    cfg = CompressionConfig(synthetic_samples=16, synthetic_steps=4, fidelity_samples=8, admm_iterations=2,
                            time_budget_s=None,
                            extra={"inversion": {"batch": 8}, "block_reconstruction": 0})
    result = compress_module(tiny_resnet(), INPUT_SHAPE, cfg, RecordingProgress(), cache_dir=tmp_path)
    assert "synthesis_budget" not in result.report
    assert result.config.synthetic_samples == 16
