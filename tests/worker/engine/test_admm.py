import copy

import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from worker.engine.admm import admm_prune, magnitude_prune, objective, solve_masked
from worker.engine.layer_stats import LayerStats, accumulate
from worker.engine.layers import CONV3X3, execution_order
from worker.engine.patterns import check_structure, pattern_library, pattern_masks


def _stats(a: torch.Tensor, y: torch.Tensor) -> LayerStats:
    a, y = a.double(), y.double()
    return LayerStats(a.T @ a, a.T @ y, (y * y).sum(0), a.sum(0), y.sum(0), a.shape[0])


def test_masked_least_squares_matches_lstsq_per_channel():
    g = torch.Generator().manual_seed(0)
    a, y = torch.randn(200, 12, generator=g), torch.randn(200, 3, generator=g)
    mask = torch.rand(3, 12, generator=g) > 0.5
    W = solve_masked(_stats(a, y), mask, damp=0.0)
    for o in range(3):
        cols = mask[o].nonzero().flatten()
        ref = torch.linalg.lstsq(a[:, cols].double(), y[:, o:o + 1].double()).solution.flatten()
        assert torch.allclose(W[o, cols], ref, atol=1e-6)
        assert (W[o, ~mask[o]] == 0).all()


def _layer_problem(seed=0):
    model = tiny_resnet(seed)
    x = torch.randn(64, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(seed))
    layers = execution_order(model, x[:2])
    layer = next(l for l in layers if l.kind == CONV3X3)
    st = accumulate(model, layer.module, model, layer.module, x, 32)
    lib = pattern_library([l.module.weight for l in layers if l.kind == CONV3X3], 4, 8)
    return layer.module.weight.detach(), st, lib


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_admm_beats_magnitude_projection_and_keeps_the_structure(rate):
    w0, st, lib = _layer_problem()
    masks = pattern_masks(lib)
    scale = torch.ones(w0.shape[0])
    admm = admm_prune(w0, st, masks, rate, scale, iterations=20)
    mag = magnitude_prune(w0, st, masks, rate, scale, refit=False)
    assert admm.relative_error < mag.relative_error
    check_structure(admm.weight, lib, 4)
    removed = int((admm.pattern_idx < 0).sum())
    assert removed == round(rate * w0.shape[0] * w0.shape[1])
    assert ((admm.weight != 0) <= admm.mask).all()


def test_refit_never_worse_than_projection_on_its_own_objective():
    w0, st, lib = _layer_problem(1)
    masks, scale = pattern_masks(lib), torch.ones(w0.shape[0])
    plain = magnitude_prune(w0, st, masks, 0.25, scale, refit=False)
    refit = magnitude_prune(w0, st, masks, 0.25, scale, refit=True)
    assert refit.relative_error <= plain.relative_error + 1e-9
    assert torch.equal(plain.mask, refit.mask)


def test_objective_is_zero_for_the_teacher_weights():
    w0, st, _ = _layer_problem()
    assert objective(w0.reshape(w0.shape[0], -1), st, torch.ones(w0.shape[0])) < 1e-8


def test_conjugate_gradient_path_matches_the_direct_solve(monkeypatch):
    import worker.engine.admm as admm
    g = torch.Generator().manual_seed(3)
    a, y = torch.randn(300, 20, generator=g), torch.randn(300, 4, generator=g)
    mask = torch.rand(4, 20, generator=g) > 0.3
    direct = solve_masked(_stats(a, y), mask)
    monkeypatch.setattr(admm, "DIRECT_SOLVE_MAX_D", 8)
    cg = admm.solve_masked(_stats(a, y), mask)
    assert torch.allclose(direct, cg, atol=1e-6)
