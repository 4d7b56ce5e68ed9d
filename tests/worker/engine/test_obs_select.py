import pytest
import torch

from tests.worker.engine.test_admm import _layer_problem
from worker.engine.admm import SELECTIONS, admm_prune, project
from worker.engine.obs_select import inverse_blocks, obs_project, removal_costs, sequential_obs_project
from worker.engine.patterns import candidate_patterns, check_structure, pattern_masks


def _random_problem(cout=3, cin=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(400, cin * 9, generator=g, dtype=torch.float64)
    a[:, 1::2] += 0.8 * a[:, ::2][:, : a[:, 1::2].shape[1]]  # correlated inputs: magnitude is not the answer
    H = a.T @ a / 400 + 1e-3 * torch.eye(cin * 9, dtype=torch.float64)
    return H, torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64)


def test_pattern_cost_is_the_exact_loss_increase_with_every_other_weight_resolved():
    H, W = _random_problem()
    masks = pattern_masks(candidate_patterns(4)[:6]).double()
    costs, whole = removal_costs(W.reshape(3, 3, 9), inverse_blocks(torch.linalg.inv(H), 3), masks)
    for o, c, p in [(0, 0, 0), (1, 2, 3), (2, 1, 5)]:
        R = torch.tensor([c * 9 + i for i in range(9) if masks[p, i] < 0.5])
        F = torch.tensor([i for i in range(27) if i not in set(R.tolist())])
        d_R = -W.reshape(3, 27)[o, R]  # zeroed weights move by -w_R, the rest re-solve: Schur complement
        schur = H[R][:, R] - H[R][:, F] @ torch.linalg.solve(H[F][:, F], H[F][:, R])
        assert costs[o, c, p] == pytest.approx(float(d_R @ schur @ d_R), rel=1e-8)
    assert (whole[..., None] >= costs - 1e-9).all()  # removing the whole kernel never costs less


def test_identity_hessian_gives_the_euclidean_projection():
    _, W = _random_problem(cout=4, cin=5, seed=1)
    masks = pattern_masks(candidate_patterns(4)[:8]).double()
    eye = torch.eye(45, dtype=torch.float64)
    blocks = inverse_blocks(eye, 5)
    for rate in (0.0, 0.5):
        euclid, idx = project(W, masks, rate)
        assert torch.equal(obs_project(W, blocks, masks, rate)[0], euclid)
        mask, seq_idx = sequential_obs_project(W, eye, masks, rate, blocks)
        assert torch.equal(mask, euclid) and torch.equal(seq_idx, idx)


def test_correlated_inputs_change_the_choice_and_it_costs_less():
    H, W = _random_problem(cout=6, cin=4, seed=2)
    masks = pattern_masks(candidate_patterns(4)).double()
    blocks = inverse_blocks(torch.linalg.inv(H), 4)
    euclid, _ = project(W, masks, 0.0)
    priced, _ = obs_project(W, blocks, masks, 0.0)
    assert not torch.equal(priced, euclid)

    def refit_loss(mask):  # exact masked least squares loss sum_o (w - w*)^T H (w - w*), w zero outside mask
        total = 0.0
        for o, m in enumerate(mask.reshape(6, -1)):
            keep, drop = m.nonzero().flatten(), (~m).nonzero().flatten()
            w = W.reshape(6, -1)[o]
            schur = H[drop][:, drop] - H[drop][:, keep] @ torch.linalg.solve(H[keep][:, keep], H[keep][:, drop])
            total += float(w[drop] @ schur @ w[drop])
        return total
    assert refit_loss(priced) < refit_loss(euclid)


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_every_selection_keeps_the_structure(selection, rate):
    w0, st, lib = _layer_problem()
    res = admm_prune(w0, st, pattern_masks(lib), rate, torch.ones(w0.shape[0]), iterations=5, selection=selection)
    check_structure(res.weight, lib, 4)
    assert int((res.pattern_idx < 0).sum()) == round(rate * w0.shape[0] * w0.shape[1])
    assert ((res.weight != 0) <= res.mask).all()
