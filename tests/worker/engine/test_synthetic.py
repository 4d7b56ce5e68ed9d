import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import NoBatchNorm, seeded
from worker.engine.synthetic import InversionSettings, _BNStatLoss, model_fingerprint, synthesize_inputs
from worker.progress import NullProgress, RecordingProgress

FAST = InversionSettings(batch=8)


def bn_loss(model, x, first_bn_weight=1.0):
    """The inversion objective's BatchNorm-statistics term for inputs x (lower = closer to the model's stats)."""
    stats = _BNStatLoss(model, first_bn_weight)
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
    second = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 4, 3, 0, NullProgress(), cache_dir=tmp_path, settings=FAST)
    assert second.info["cached"] and torch.equal(first.images, second.images)
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


def test_no_batchnorm_falls_back_to_gaussian_and_says_so(tmp_path):
    progress = RecordingProgress()
    out = synthesize_inputs(seeded(NoBatchNorm), INPUT_SHAPE, "bn-inversion", 5, 10, 0, progress, cache_dir=tmp_path)
    assert out.info["mode"] == "gaussian" and "BatchNorm" in out.info["fallback"]
    assert any("gaussian" in e[4] for e in progress.events)
    assert out.images.shape == (5, *INPUT_SHAPE[1:])


def test_fingerprint_changes_with_any_weight():
    model = tiny_resnet()
    before = model_fingerprint(model)
    with torch.no_grad():
        model.linear.bias[0] += 1e-3
    assert model_fingerprint(model) != before
