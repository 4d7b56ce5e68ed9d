"""Prior-inversion (models without BatchNorm) runs with a stronger smoothness prior; models with BatchNorm keep
exactly their settings (and so their cached inputs)."""
from dataclasses import replace

import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import NoBatchNorm, seeded
from worker.engine.synthetic import (PRIOR_CLASS_WEIGHT, PRIOR_TV_WEIGHT, InversionSettings, _mode_run, _tv,
                                    invert_batchnorm, synthesize_inputs)
from worker.progress import NullProgress

FAST = InversionSettings(batch=8)


def test_prior_inversion_uses_the_stronger_smoothness_prior_and_says_so(tmp_path):
    model = seeded(NoBatchNorm)
    out = synthesize_inputs(model, INPUT_SHAPE, "bn-inversion", 8, 30, 0, NullProgress(), cache_dir=tmp_path,
                            settings=FAST)
    assert out.info["mode"] == "prior-inversion" and out.info["tv_weight"] == PRIOR_TV_WEIGHT
    prior = replace(FAST, class_weight=PRIOR_CLASS_WEIGHT, tv_weight=PRIOR_TV_WEIGHT)
    assert torch.equal(out.images, invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), prior))
    weak = invert_batchnorm(model, INPUT_SHAPE, 8, 30, 0, NullProgress(), replace(prior, tv_weight=FAST.tv_weight))
    assert _tv(out.images) < 0.8 * _tv(weak)  # the term is there: smoother than with the BatchNorm path's prior


def test_a_stronger_explicit_smoothness_prior_is_kept():
    _, settings = _mode_run(seeded(NoBatchNorm), "bn-inversion", replace(FAST, tv_weight=1e-2))
    assert settings.tv_weight == 1e-2


def test_models_with_batchnorm_keep_their_settings():
    assert InversionSettings().tv_weight == 3e-4  # the BatchNorm path's default (its cache keys) is unchanged
    mode, settings = _mode_run(tiny_resnet(), "bn-inversion", FAST)
    assert mode == "bn-inversion" and settings == FAST
