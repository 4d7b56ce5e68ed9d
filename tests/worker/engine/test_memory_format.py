import torch
from torch import nn

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from worker.engine.memory_format import FORMATS, probe_inversion
from worker.engine.synthetic import InversionSettings, _BNStatLoss, invert_batchnorm, synthesize_inputs
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


def test_both_formats_are_timed_and_the_faster_is_chosen():
    probe = probe_inversion(tiny_resnet(), INPUT_SHAPE, torch.device("cpu"), batch=8)
    assert set(probe.seconds_per_input_step) == set(FORMATS)
    assert all(0 < s < 5 for s in probe.seconds_per_input_step.values())
    assert probe.seconds == min(probe.seconds_per_input_step.values())


def test_a_model_that_cannot_run_channels_last_stays_contiguous():
    model = FlattensPermuted().eval()
    probe = probe_inversion(model, INPUT_SHAPE, torch.device("cpu"), batch=4)
    assert probe.memory_format == "contiguous" and set(probe.seconds_per_input_step) == {"contiguous"}


def test_inputs_without_an_image_layout_stay_contiguous():
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    probe = probe_inversion(model, (1, 12), torch.device("cpu"), batch=4)
    assert probe.memory_format == "contiguous"


def bn_loss(model, x):
    stats = _BNStatLoss(model, 1.0)
    with torch.no_grad():
        model(x)
    loss = float(stats.pop())
    stats.close()
    return loss


def test_channels_last_inverts_the_same_images_up_to_rounding():
    model = tiny_resnet()
    plain = invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), FAST)
    permuted = invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), FAST, memory_format="channels_last")
    assert permuted.is_contiguous() and permuted.shape == plain.shape
    assert (permuted - plain).abs().mean() < 0.05 * plain.std()
    assert abs(bn_loss(model, permuted) - bn_loss(model, plain)) < 0.1 * bn_loss(model, plain)


def test_the_report_says_which_format_inverted(tmp_path):
    out = synthesize_inputs(tiny_resnet(), INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                            settings=FAST, memory_format="channels_last")
    assert out.info["memory_format"] == "channels_last"
    again = synthesize_inputs(tiny_resnet(), INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                              settings=FAST)
    assert again.info["cached"] and torch.equal(again.images, out.images)  # the format is not part of the key
