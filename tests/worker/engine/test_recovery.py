import copy

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.engine_models import half_masked_student
from worker.engine.recovery import distill, recalibrate_batchnorm
from worker.progress import NullProgress

X = torch.randn(32, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(0))


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_relative_recalibration_leaves_an_unpruned_model_alone():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    recalibrate_batchnorm(student, teacher, X, batch=16, relative=True)
    for k, v in _bn_state(student).items():
        assert torch.allclose(v, _bn_state(teacher)[k], rtol=1e-4, atol=1e-5), k


def test_recalibration_follows_a_shifted_layer():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.conv1.weight.mul_(2.0)  # bn1's input doubles: its mean doubles, its variance quadruples
    recalibrate_batchnorm(student, teacher, X, batch=32, relative=False)
    with torch.no_grad():
        pre = student.conv1(X)
    assert torch.allclose(student.bn1.running_mean, pre.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(student.bn1.running_var, pre.var((0, 2, 3), unbiased=False), rtol=1e-3)


def test_distillation_keeps_masks_and_moves_towards_the_teacher():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(student.layer1.conv1.weight.shape, generator=g) > 0.5
    with torch.no_grad():
        student.layer1.conv1.weight.mul_(mask)
    masks = {"layer1.conv1.weight": mask}

    def kl():
        with torch.no_grad():
            t, s = teacher(X), student(X)
        return float(torch.nn.functional.kl_div(s.log_softmax(1), t.log_softmax(1), reduction="batchmean", log_target=True))

    before = kl()
    info = distill(student, teacher, X, masks, 30, NullProgress(), lr=3e-3, batch=16, feature_layers=["layer1.bn1"])
    assert info["steps"] == 30
    assert kl() < before
    assert (student.layer1.conv1.weight[~mask] == 0).all()
    assert not any(p.requires_grad for p in student.parameters())


def test_zero_steps_or_zero_budget_does_nothing():
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    assert distill(student, teacher, X, {}, 0, NullProgress())["steps"] == 0
    assert distill(student, teacher, X, {}, 5, NullProgress(), time_budget_s=0.0)["steps"] == 0


def test_a_time_budget_shortens_the_schedule_so_it_still_anneals(monkeypatch):
    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    clock, rates = [0.0], []

    def step(opt, *args, **kwargs):  # each optimizer step takes one second of a fake clock
        rates.append(opt.param_groups[0]["lr"])
        clock[0] += 1.0

    monkeypatch.setattr("worker.engine.schedule.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("torch.optim.Adam.step", step)
    # the first steps take a second each: a 12-second budget buys 12 of the 100 asked, so the cosine ends there
    info = distill(student, teacher, X, {}, 100, NullProgress(), lr=1.0, batch=4, time_budget_s=12.0)
    assert info["steps"] == 12
    assert rates[0] == 1.0 and rates[-1] < 0.02


def test_distillation_on_layer_inputs_pulls_those_inputs_towards_the_teacher():
    teacher, student, mask = half_masked_student(seed=2)

    def input_gap():  # layer1.conv2's input (relu(bn1(conv1(.)))) of the student vs the teacher
        seen = []
        hooks = [m.layer1.conv2.register_forward_pre_hook(lambda mod, a: seen.append(a[0])) for m in (student, teacher)]
        with torch.no_grad():
            student(X), teacher(X)
        for h in hooks:
            h.remove()
        return float((seen[0] - seen[1]).pow(2).mean())

    before = input_gap()
    distill(student, teacher, X, {"layer1.conv1.weight": mask}, 30, NullProgress(), lr=3e-3, batch=16,
            feature_layers=["layer1.conv2"], feature_weight=10.0, feature_on="input")
    assert input_gap() < 0.7 * before
    assert (student.layer1.conv1.weight[~mask] == 0).all()
    assert not student.layer1.conv2._forward_pre_hooks and not teacher.layer1.conv2._forward_pre_hooks
    with pytest.raises(ValueError, match="feature_on"):
        distill(student, teacher, X, {}, 1, NullProgress(), feature_on="both")
