import pytest
import torch
from torch import nn

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.test_synthetic import bn_loss
from worker.engine import inversion_modes
from worker.engine.inversion_modes import (MODES, StepMode, choose_mode, forward, preferred_modes, prepare,
                                          seconds_per_input_step)
from worker.engine.synthetic import InversionSettings, invert_batchnorm, synthesize_inputs
from worker.progress import NullProgress

FAST = InversionSettings(batch=8)


class FlattensPermuted(nn.Module):
    """A graph that only runs contiguous: `view` of an activation whose strides channels-last permutes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def test_the_hardwares_preferred_mode_is_chosen_and_timed():
    cpu = torch.device("cpu")
    preferred = preferred_modes(cpu)
    assert preferred[-1] == "contiguous" and set(preferred) <= set(MODES)
    mode = choose_mode(tiny_resnet(), INPUT_SHAPE, cpu, batch=8)
    assert mode == preferred[0] and 0 < seconds_per_input_step(tiny_resnet(), INPUT_SHAPE, cpu, 8, mode) < 5


@pytest.mark.parametrize("flags,expected", [
    ({}, ["contiguous"]),
    ({"_is_avx2_supported"}, ["channels_last", "contiguous"]),
    ({"_is_avx2_supported", "_is_avx512_supported"}, ["channels_last", "contiguous"]),
    ({"_is_avx2_supported", "_is_avx512_supported", "_is_avx512_bf16_supported"},
     ["channels_last_bf16", "channels_last", "contiguous"]),
    ({"_is_avx2_supported", "_is_avx512_supported", "_is_amx_tile_supported"},
     ["channels_last_bf16", "channels_last", "contiguous"]),
])
def test_preferred_modes_follow_the_cpus_instructions(monkeypatch, flags, expected):
    for name in ("_is_avx2_supported", "_is_avx512_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda name=name: name in flags)
    assert preferred_modes(torch.device("cpu")) == expected


def test_the_choice_does_not_depend_on_a_timing_race():
    modes = {choose_mode(tiny_resnet(), INPUT_SHAPE, torch.device("cpu"), batch=8) for _ in range(3)}
    assert len(modes) == 1


def test_a_model_that_cannot_run_channels_last_stays_contiguous():
    model = FlattensPermuted().eval()
    assert choose_mode(model, INPUT_SHAPE, torch.device("cpu"), batch=4) == "contiguous"


def test_inputs_without_an_image_layout_stay_contiguous():
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    assert choose_mode(model, (1, 12), torch.device("cpu"), batch=4) == "contiguous"


def test_a_mode_whose_output_drifts_is_passed_over(monkeypatch):
    every_mode = ["channels_last_bf16", "channels_last", "contiguous"]
    monkeypatch.setattr(inversion_modes, "preferred_modes", lambda device: every_mode)
    monkeypatch.setitem(MODES, "channels_last_bf16", StepMode(torch.channels_last, bfloat16=True,
                                                              rtol=1e-9))  # bfloat16 logits are never that close
    assert choose_mode(tiny_resnet(), INPUT_SHAPE, torch.device("cpu"), batch=8) == "channels_last"


def test_bfloat16_mode_runs_the_model_in_bfloat16_and_returns_float32():
    model = prepare(tiny_resnet(), "channels_last_bf16")
    seen = []
    model.conv1.register_forward_hook(lambda mod, inputs, output: seen.append(output.dtype))
    out = forward(model, torch.randn(2, *INPUT_SHAPE[1:]), "channels_last_bf16")
    assert seen == [torch.bfloat16] and out.dtype == torch.float32


def test_channels_last_inverts_the_same_images_up_to_rounding():
    model = tiny_resnet()
    plain = invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), FAST)
    permuted = invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), FAST, inversion_mode="channels_last")
    assert permuted.is_contiguous() and permuted.shape == plain.shape
    assert (permuted - plain).abs().mean() < 0.05 * plain.std()
    assert abs(bn_loss(model, permuted) - bn_loss(model, plain)) < 0.1 * bn_loss(model, plain)


def test_bfloat16_inversion_fits_the_statistics_as_well():
    model = tiny_resnet()
    start = bn_loss(model, torch.randn(8, *INPUT_SHAPE[1:]))
    plain = bn_loss(model, invert_batchnorm(model, INPUT_SHAPE, 8, 40, 0, NullProgress(), FAST))
    half = bn_loss(model, invert_batchnorm(model, INPUT_SHAPE, 8, 40, 0, NullProgress(), FAST,
                                           inversion_mode="channels_last_bf16"))
    assert half < start and abs(half - plain) < 0.01 * plain  # a broken bfloat16 step would stay near start


def test_the_report_says_which_mode_inverted(tmp_path):
    out = synthesize_inputs(tiny_resnet(), INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                            settings=FAST, inversion_mode="channels_last")
    assert out.info["inversion_mode"] == "channels_last"
    again = synthesize_inputs(tiny_resnet(), INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                              settings=FAST)
    assert again.info["cached"] and torch.equal(again.images, out.images)  # the mode is not part of the key
