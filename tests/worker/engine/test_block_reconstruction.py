import copy
from dataclasses import replace

import pytest
import torch
from torch import fx, nn

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import NoBatchNorm, half_masked_student, seeded
from worker.engine.block_reconstruction import BlockSettings, block_module, find_blocks, reconstruct_blocks
from worker.engine.compress import block_settings
from worker.engine.config import CompressionConfig
from worker.engine.errors import InvalidConfigError
from worker.progress import RecordingProgress

PRUNED = {"layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2"}


def _x(n=32, seed=0):
    return torch.randn(n, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(seed))


def test_blocks_are_the_residual_blocks_and_chain_to_the_model():
    model = tiny_resnet()
    gm = fx.symbolic_trace(model)
    blocks = find_blocks(gm, PRUNED)
    assert [b.layers for b in blocks] == [["layer1.conv1", "layer1.conv2"], ["layer2.conv1", "layer2.conv2"]]
    x = _x(4)
    stem = torch.relu(model.bn1(model.conv1(x)))
    assert torch.allclose(block_module(gm, blocks[1])(block_module(gm, blocks[0])(x)), model.layer2(model.layer1(stem)),
                          atol=1e-6)


def test_a_plain_chain_gets_groups_of_consecutive_pruned_layers():
    gm = fx.symbolic_trace(seeded(NoBatchNorm))
    assert [b.layers for b in find_blocks(gm, {"conv1", "conv2"})] == [["conv1", "conv2"]]
    assert [b.layers for b in find_blocks(gm, {"conv1", "conv2"}, min_layers=1)] == [["conv1"], ["conv2"]]


def test_reconstruction_lowers_the_block_error_and_keeps_the_masks():
    teacher, student, mask = half_masked_student(seed=3)
    masks = {"layer1.conv1.weight": mask}
    for p in student.parameters():
        p.requires_grad_(False)  # as compress_module leaves them
    progress = RecordingProgress()
    report = reconstruct_blocks(student, teacher, _x(), masks, BlockSettings(steps=30, lr=1e-2), progress)
    assert report["blocks"] == 1
    block = report["per_block"][0]
    assert block["error_after"] < block["error_before"]
    assert (student.layer1.conv1.weight[~mask] == 0).all()
    assert not any(p.requires_grad for p in student.parameters())
    assert any(event[1] == "recover" for event in progress.events)


def test_a_block_that_cannot_improve_keeps_its_weights():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)  # already exact: any step can only add error
    before = copy.deepcopy(student.state_dict())
    masks = {f"{n}.weight": torch.ones_like(student.get_submodule(n).weight, dtype=torch.bool) for n in PRUNED}
    report = reconstruct_blocks(student, teacher, _x(), masks, BlockSettings(steps=3, lr=1e-1), RecordingProgress())
    assert all(b["error_after"] <= b["error_before"] for b in report["per_block"])
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_zero_steps_or_an_exhausted_budget_changes_nothing():
    teacher, student, mask = half_masked_student(seed=4)
    before = copy.deepcopy(student.state_dict())
    masks = {"layer1.conv1.weight": mask}
    assert reconstruct_blocks(student, teacher, _x(), masks, BlockSettings(steps=0), RecordingProgress())["blocks"] == 0
    report = reconstruct_blocks(student, teacher, _x(), masks, BlockSettings(steps=5), RecordingProgress(),
                                time_budget_s=0.0)
    assert report["per_block"][0].get("skipped") == "time budget"
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_on_by_default_and_zero_turns_it_off():
    assert block_settings(CompressionConfig()).steps > 0
    assert block_settings(CompressionConfig(extra={"block_reconstruction": 0})).steps == 0


def test_defaults_ask_for_more_steps_inputs_and_pairs_of_blocks():
    resnet56 = 125_485_696
    cfg = CompressionConfig(synthetic_samples=128)
    settings = block_settings(cfg, macs=resnet56)
    assert (settings.steps, settings.min_layers, settings.inputs) == (300, 4, 512)  # 4x the pruning set
    assert block_settings(replace(cfg, synthetic_samples=16), macs=10**8).inputs == 64  # a small run stays small
    assert block_settings(replace(cfg, synthetic_samples=768), macs=resnet56 // 3).inputs == 768  # none extra
    assert block_settings(cfg, macs=2 * resnet56).inputs == 256  # dearer per input: fewer extra ones
    assert block_settings(cfg, macs=1_800_000_000).inputs == 128  # an ImageNet-sized model: none
    given = replace(cfg, extra={"block_reconstruction": {"steps": 50, "inputs": 0}})
    assert (block_settings(given, macs=10**8).steps, block_settings(given, macs=10**8).inputs) == (50, 0)
    assert block_settings(replace(cfg, extra={"block_reconstruction": 7}), macs=10**8).min_layers == 4


def test_the_extra_block_inputs_are_new_ones_made_for_that_stage_only(tmp_path):
    from tests.worker.engine.test_compress import _check_structure, _run
    from worker.engine.compress import BLOCK_SEED_OFFSET

    result, _ = _run(tmp_path, synthetic_samples=16, recovery_steps=0,
                     extra={"inversion": {"batch": 8}, "block_reconstruction": {"steps": 5}})
    report = result.report["recovery"]["block_reconstruction"]
    assert report["inputs"] == 64 and report["blocks"] >= 1
    assert report["extra_inputs"]["samples"] == 48 and report["extra_inputs"]["seed"] == BLOCK_SEED_OFFSET
    assert result.report["synthetic"]["samples"] == 16  # the layer-wise pass kept its own set
    _check_structure(result)


def test_options_are_validated():
    assert block_settings(CompressionConfig(extra={"block_reconstruction": 50})).steps == 50
    assert block_settings(CompressionConfig(extra={"block_reconstruction": {"steps": 20, "lr": 0.01}})).lr == 0.01
    for bad, match in [(True, "block_reconstruction"), ("100", "block_reconstruction"), (-1, "steps"),
                       ({"steps": 1.5}, "steps"), ({"lr": 0}, "lr"), ({"evil": 1}, "unknown"),
                       ({"teacher_input": 2}, "teacher_input")]:
        with pytest.raises(InvalidConfigError, match=match):
            block_settings(CompressionConfig(extra={"block_reconstruction": bad}))


def test_compress_module_runs_it_in_the_recovery_stage_and_reports_each_block(tmp_path):
    import json

    from tests.worker.engine.test_compress import _check_structure, _run
    result, progress = _run(tmp_path, recovery_steps=0, extra={"inversion": {"batch": 8},
                                                               "block_reconstruction": {"steps": 5, "min_layers": 2}})
    report = result.report["recovery"]["block_reconstruction"]
    assert report["blocks"] == 2 and all("error_after" in b for b in report["per_block"])
    _check_structure(result)
    json.dumps(result.report, allow_nan=False)
    assert any("block 2/2" in event[4] for event in progress.events)


def test_a_time_budget_shortens_every_block_instead_of_skipping_the_last(monkeypatch):
    from worker.engine import block_reconstruction

    clock = [100.0]
    monkeypatch.setattr(block_reconstruction.time, "monotonic", lambda: clock[0])
    pace = block_reconstruction._Pace(steps=300, batch=64, deadline=None)
    assert pace.next_block(3) == (300, 64, None)  # no budget: what was asked
    pace = block_reconstruction._Pace(steps=300, batch=64, deadline=112.0)
    assert pace.next_block(3) == (300, 64, 104.0)  # nothing measured yet: the first block stops at its share
    pace.record(steps=50, batch=64, seconds=4.0)
    clock[0] = 104.0
    assert pace.next_block(2) == (200, 16, None)  # 4 s each buy 3200 samples: batch 16, and 200 of the 300 steps
    pace.record(steps=200, batch=16, seconds=4.0)
    clock[0] = 109.0  # the last block is one second late
    assert pace.next_block(1) == (150, 16, None)  # the batch stops at 16: the steps are cut
    clock[0] = 112.5
    assert pace.next_block(1)[0] == 0  # nothing left: skipped


def test_a_budget_that_buys_every_step_keeps_the_batch(monkeypatch):
    from worker.engine import block_reconstruction

    clock = [0.0]
    monkeypatch.setattr(block_reconstruction.time, "monotonic", lambda: clock[0])
    pace = block_reconstruction._Pace(steps=100, batch=64, deadline=100.0)
    pace.next_block(4)
    pace.record(steps=100, batch=64, seconds=10.0)
    clock[0] = 10.0
    assert pace.next_block(3) == (100, 64, None)  # 30 s each, 10 needed
    small = block_reconstruction._Pace(steps=100, batch=8, deadline=100.0)
    small.next_block(2)
    small.record(steps=100, batch=8, seconds=50.0)
    clock[0] = 75.0
    assert small.next_block(1) == (50, 8, None)  # a batch asked below 16 is never halved


def test_every_block_is_tuned_within_a_budget():
    model = tiny_resnet()
    student = copy.deepcopy(model)
    masks = {f"{n}.weight": torch.rand_like(student.get_submodule(n).weight) < 0.5 for n in PRUNED}
    with torch.no_grad():
        for name, mask in masks.items():
            student.get_submodule(name[:-len(".weight")]).weight.mul_(mask)
    report = reconstruct_blocks(student, model, _x(), masks, BlockSettings(steps=20, min_layers=2),
                                RecordingProgress(), time_budget_s=30.0)
    assert report["blocks"] == 2
    assert all(0 < b["steps"] <= 20 and "skipped" not in b for b in report["per_block"])
