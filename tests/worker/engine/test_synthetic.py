import os
import time
from dataclasses import replace

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import NoBatchNorm, seeded
from worker.engine.compress import inversion_settings
from worker.engine.config import CompressionConfig
from worker.engine.errors import InvalidConfigError
from worker.engine.bn_stats import BNStatLoss, channel_mean_var
from worker.engine.synthetic import (PRIOR_CLASS_WEIGHT, PRIOR_TV_WEIGHT, InversionSettings, invert_batchnorm,
                                    model_fingerprint, spectral_noise, synthesize_inputs)
from worker.progress import NullProgress, RecordingProgress

FAST = InversionSettings(batch=8)


def bn_loss(model, x, first_bn_weight=1.0):
    """The inversion objective's BatchNorm-statistics term for inputs x (lower = closer to the model's stats)."""
    stats = BNStatLoss(model, first_bn_weight)
    with torch.no_grad():
        model(x)
    loss = float(stats.pop())
    stats.close()
    return loss


def test_gaussian_is_deterministic_from_the_seed(tmp_path):
    model = tiny_resnet()
    a = synthesize_inputs(model, INPUT_SHAPE, "gaussian", 6, 0, 3, NullProgress(), cache_dir=tmp_path)
    b = synthesize_inputs(model, INPUT_SHAPE, "gaussian", 6, 0, 3, NullProgress(), cache_dir=tmp_path)
    c = synthesize_inputs(model, INPUT_SHAPE, "gaussian", 6, 0, 4, NullProgress(), cache_dir=tmp_path)
    assert a.images.shape == (6, *INPUT_SHAPE[1:])
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def _consistent_stats_model():
    """Running statistics that one input distribution really has (tiny_resnet's are a momentum blend)."""
    model = tiny_resnet()
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(256, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(5)) * 2 - 0.5)
    return model.eval()


def test_bn_inversion_matches_statistics_better_than_noise_and_is_deterministic(tmp_path):
    model = _consistent_stats_model()
    a = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 8, 40, 0, NullProgress(), cache_dir=tmp_path / "a", settings=FAST)
    b = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 8, 40, 0, NullProgress(), cache_dir=tmp_path / "b", settings=FAST)
    assert not a.info["cached"] and not b.info["cached"]
    assert torch.allclose(a.images, b.images)
    noise = torch.randn(8, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    assert bn_loss(model, a.images) < 0.5 * bn_loss(model, noise)
    assert all(p.requires_grad for p in model.parameters())  # the caller's model is left alone


def test_cache_hit_returns_the_same_images_and_says_so(tmp_path):
    model = tiny_resnet()
    first = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path, settings=FAST)
    (entry,) = (tmp_path / "synthetic").iterdir()
    os.utime(entry, (time.time() - 7200,) * 2)
    second = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path, settings=FAST)
    assert second.info["cached"] and torch.equal(first.images, second.images)
    assert time.time() - entry.stat().st_mtime < 600  # marked used: the worker's cache trim keeps it longest
    other_seed = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 1, NullProgress(), cache_dir=tmp_path, settings=FAST)
    assert not other_seed.info["cached"]
    other_model = synthesize_inputs(tiny_resnet(seed=1), INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(),
                                    cache_dir=tmp_path, settings=FAST)
    assert not other_model.info["cached"]


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    model = tiny_resnet()
    synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 2, 0, NullProgress(), cache_dir=tmp_path, settings=FAST)
    for f in (tmp_path / "synthetic").iterdir():
        f.write_bytes(b"not a tensor file")
    again = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 2, 0, NullProgress(), cache_dir=tmp_path, settings=FAST)
    assert not again.info["cached"] and again.images.shape[0] == 4


def test_no_batchnorm_falls_back_to_prior_inversion_and_says_so(tmp_path):
    progress = RecordingProgress()
    model = seeded(NoBatchNorm)
    out = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 5, 40, 0, progress, cache_dir=tmp_path)
    assert out.info["mode"] == "prior-inversion" and "BatchNorm" in out.info["fallback"]
    assert out.info["class_weight"] == PRIOR_CLASS_WEIGHT
    assert any("no BatchNorm" in e[4] for e in progress.events)
    assert out.images.shape == (5, *INPUT_SHAPE[1:]) and torch.isfinite(out.images).all()
    # optimised for the model's class scores: it is more confident on them than on the same inversion without the
    # class term (the smoothness prior alone lowers the contrast, and with it this random model's confidence)
    flat = invert_batchnorm(model, INPUT_SHAPE, 5, 40, 0, NullProgress(),
                            replace(InversionSettings(), class_weight=0.0, tv_weight=PRIOR_TV_WEIGHT))
    with torch.no_grad():
        confidence = [torch.softmax(model(x), 1).amax(1).mean() for x in (flat, out.images)]
    assert confidence[1] > confidence[0] + 0.002  # 0.1325 -> 0.1366 on this random model
    again = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 5, 40, 0, NullProgress(), cache_dir=tmp_path)
    assert again.info["cached"] and torch.equal(again.images, out.images)


def test_fingerprint_changes_with_any_weight():
    model = tiny_resnet()
    before = model_fingerprint(model)
    with torch.no_grad():
        model.linear.bias[0] += 1e-3
    assert model_fingerprint(model) != before


def _low_frequency_share(x):
    """Share of the (mean-removed) power in the 3x3 lowest spatial frequencies."""
    power = torch.fft.rfft2(x - x.mean()).abs().pow(2).mean((0, 1))
    return float(power[[0, 1, -1]][:, :2].sum() / power.sum())


def test_spectral_noise_has_natural_low_frequency_power_and_is_deterministic():
    white = spectral_noise(16, 3, 16, 16, 0.0, torch.Generator().manual_seed(0))
    pink = spectral_noise(16, 3, 16, 16, 1.0, torch.Generator().manual_seed(0))
    again = spectral_noise(16, 3, 16, 16, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(pink, again) and abs(float(pink.std()) - 1.0) < 1e-4
    assert _low_frequency_share(pink) > 5 * _low_frequency_share(white)
    # each image gets its own brightness / colour: per-image means spread far more than white noise's
    assert float(pink.mean((2, 3)).std()) > 3 * float(white.mean((2, 3)).std())


def test_noise_decay_changes_the_images_and_the_cache_key(tmp_path):
    model = tiny_resnet()
    white = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                              settings=InversionSettings(batch=8, noise_decay=0.0))
    pink = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path,
                             settings=InversionSettings(batch=8, noise_decay=1.0))
    assert not pink.info["cached"] and not torch.allclose(white.images, pink.images)


@pytest.mark.parametrize("value", [-0.5, 3.5, float("nan"), "1"])
def test_noise_decay_is_validated(value):
    with pytest.raises(InvalidConfigError, match="noise_decay"):
        inversion_settings(CompressionConfig(extra={"inversion": {"noise_decay": value}}))


def test_channel_mean_var_matches_torch_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 4, 6, 7, generator=g) * 2 + 1).requires_grad_(True)
    weights = torch.randn(4, generator=g)
    mean, var = channel_mean_var(x)
    ref_var, ref_mean = torch.var_mean(x, (0, 2, 3), unbiased=False)
    assert torch.allclose(mean, ref_mean, atol=1e-5) and torch.allclose(var, ref_var, atol=1e-5)
    grad, = torch.autograd.grad((weights * (mean + var)).sum(), x)
    ref_grad, = torch.autograd.grad((weights * (ref_mean + ref_var)).sum(), x)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
