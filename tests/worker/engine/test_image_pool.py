import copy

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import half_masked_student
from tests.worker.engine.test_synthetic import bn_loss
from worker.engine.compress import compress_module
from worker.engine.config import CompressionConfig
from worker.engine.errors import InvalidConfigError
from worker.engine.image_pool import ImagePool, PoolSettings, _js_agreement
from worker.engine.recovery import distill
from worker.engine.synthetic import InversionSettings
from worker.progress import NullProgress

X = torch.randn(16, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))


def test_js_agreement_is_one_for_equal_outputs_and_near_zero_for_opposite_ones():
    a = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    assert float(_js_agreement(a, a)) == pytest.approx(1.0)
    assert float(_js_agreement(a, a.flip(1))) < 0.01


def test_refreshing_the_pool_moves_images_towards_the_teacher_statistics_and_leaves_the_teacher_alone():
    teacher = tiny_resnet()
    before_state = copy.deepcopy(teacher.state_dict())
    pool = ImagePool(teacher, X, PoolSettings(inversion_steps=5, lr=0.05, competition_weight=0.0),
                     InversionSettings(jitter=0), seed=0)
    try:
        for _ in range(4):
            batch = pool.next_batch(teacher, 8)
            assert batch.shape == (8, *INPUT_SHAPE[1:]) and torch.isfinite(batch).all()
    finally:
        pool.close()
    assert pool.steps_done == 20
    assert bn_loss(teacher, pool.images, 10.0) < bn_loss(teacher, X, 10.0)
    assert not teacher._forward_hooks and all(not m._forward_hooks for m in teacher.modules())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before_state[k]), k


def test_the_competition_term_finds_inputs_where_student_and_teacher_disagree():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.layer2.conv2.weight.mul_(0.3)
    for p in student.parameters():
        p.requires_grad_(False)
    settings = PoolSettings(inversion_steps=10, lr=0.05, competition_weight=100.0)
    pool = ImagePool(teacher, X, settings, InversionSettings(jitter=0), seed=0)
    try:
        pool.next_batch(student, 16)
    finally:
        pool.close()
    with torch.no_grad():
        assert float(_js_agreement(teacher(pool.images), student(pool.images))) < \
            float(_js_agreement(teacher(X), student(X)))


def test_distillation_on_a_refreshed_pool_keeps_masks():
    teacher, student, mask = half_masked_student(seed=1)
    pool = ImagePool(teacher, X, PoolSettings(inversion_steps=1), InversionSettings(), seed=0)
    info = distill(student, teacher, X, {"layer1.conv1.weight": mask}, 6, NullProgress(), lr=3e-3, batch=8,
                   pool=pool)
    pool.close()
    assert info["steps"] == 6 and pool.steps_done == 6
    assert (student.layer1.conv1.weight[~mask] == 0).all()
    assert not any(p.requires_grad for p in student.parameters())


@pytest.mark.parametrize("fresh, needle", [({"inversion_steps": -1}, "inversion_steps"),
                                           ({"lr": float("nan")}, "lr"), ({"competition_weight": "x"}, "competition_weight"),
                                           ({"evil": 1}, "unknown fresh_inputs setting"), ([], "fresh_inputs")])
def test_bad_fresh_input_settings_are_refused_by_name(tmp_path, fresh, needle):
    cfg = CompressionConfig(synthetic_samples=4, synthetic_steps=1, fidelity_samples=4, extra={"fresh_inputs": fresh})
    with pytest.raises(InvalidConfigError, match=needle):
        compress_module(tiny_resnet(), INPUT_SHAPE, cfg, NullProgress(), cache_dir=tmp_path)
