"""The automatic synthetic sample count: 768 for a ResNet-20-cheap model, falling with the square of the cost per
image, whole inversion batches, at least 128; an explicit `synthetic_samples` wins; report.json shows the number run."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.tiny_models import tiny_resnet
from tests.worker.engine.test_run import export_pt2, small_config
from worker.engine.layers import execution_order
from worker.engine.run import compress_file
from worker.engine.sample_budget import (MAX_SAMPLES, MIN_SAMPLES, REFERENCE_MACS, STEP, automatic_samples,
                                         macs_per_image)
from worker.progress import RecordingProgress


def test_macs_count_every_conv_and_linear_at_its_output_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    layers = execution_order(model, torch.zeros(2, 3, 8, 8))
    assert macs_per_image(layers) == 4 * 3 * 9 * 64 + 6 * 4 * 9 * 16 + 6 * 2


@pytest.mark.parametrize("macs, expected", [
    (125_485_696, 128),     # ResNet-56 (CIFAR): today's 128, so its job does not grow
    (40_551_040, 768),      # ResNet-20 (CIFAR): ~3x cheaper per image, 768 inputs
    (60_000_000, 320),      # in between: 768 x (4.1e7 / 6e7)^2 = 358, in whole batches of 64
    (1_800_000_000, 128),   # ResNet-18 (ImageNet) and larger: never fewer than 128
    (1_000, 768),           # tiny models: capped
])
def test_automatic_samples_fall_with_the_square_of_the_cost(macs, expected):
    assert automatic_samples(macs) == expected


def test_automatic_samples_stay_in_whole_batches_within_the_rule():
    previous = MAX_SAMPLES
    for macs in range(10_000_000, 400_000_000, 7_000_000):
        n = automatic_samples(macs)
        assert MIN_SAMPLES <= n <= MAX_SAMPLES and n % STEP == 0 and n <= previous
        assert n == MIN_SAMPLES or n <= MAX_SAMPLES * (REFERENCE_MACS / macs) ** 2
        previous = n


@pytest.mark.parametrize("given", [None, 8])
def test_report_config_shows_the_samples_run(tmp_path, given):
    model = export_pt2(tiny_resnet(), tmp_path / "tiny.pt2")
    config = small_config(synthetic_samples=given, connectivity=0.0)
    report = compress_file(model, tmp_path / "out", config, RecordingProgress(), cache_dir=tmp_path / "cache")
    expected = MAX_SAMPLES if given is None else given  # the tiny model is cheap: the cap
    assert report["config"]["synthetic_samples"] == expected
    assert report["compression"]["synthetic"]["samples"] == expected
    assert json.loads((tmp_path / "out" / "report.json").read_text())["config"]["synthetic_samples"] == expected
    assert config.synthetic_samples == given  # the caller's config is not changed
