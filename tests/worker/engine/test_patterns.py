import itertools

import pytest
import torch

from worker.engine.connectivity import keep_kernels
from worker.engine.errors import InvalidConfigError
from worker.engine.admm import project
from worker.engine.patterns import (CENTRE, best_patterns, candidate_patterns, check_structure, pattern_library,
                                    pattern_masks)


def test_candidates_keep_the_centre_and_count():
    cands = candidate_patterns(4)
    assert len(cands) == 56 and len(set(cands)) == 56
    assert all(CENTRE in p and len(p) == 4 for p in cands)
    assert candidate_patterns(9) == [tuple(range(9))]


@pytest.mark.parametrize("entries", [0, 10, -1])
def test_bad_entries_rejected(entries):
    with pytest.raises(InvalidConfigError, match="entries"):
        candidate_patterns(entries)


def test_library_picks_the_patterns_the_weights_use():
    g = torch.Generator().manual_seed(0)
    favourite = [(0, 1, 4, 7), (1, 3, 4, 5), (4, 5, 7, 8)]
    kernels = torch.zeros(300, 9)
    for k in range(300):
        kernels[k, list(favourite[k % 3])] = 1.0 + torch.rand(4, generator=g)
    kernels += 0.01 * torch.randn(300, 9, generator=g)
    lib = pattern_library([kernels.reshape(10, 30, 3, 3)], 4, 3)
    assert sorted(lib) == sorted(favourite)
    assert len(pattern_library([kernels.reshape(10, 30, 3, 3)], 4, 8)) == 8
    with pytest.raises(InvalidConfigError):
        pattern_library([kernels.reshape(10, 30, 3, 3)], 4, 0)


def test_projection_is_the_euclidean_optimum_on_a_small_case():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 2, 3, 3, generator=g)
    lib = pattern_library([torch.randn(8, 8, 3, 3, generator=g)], 4, 4)
    masks = pattern_masks(lib)
    mask, idx = project(w, masks, 0.5)  # keeps 2 of the 4 kernels
    best = None
    for choice in itertools.product(range(len(lib)), repeat=4):
        for kept in itertools.combinations(range(4), 2):
            m = torch.zeros(4, 9)
            for k in kept:
                m[k] = masks[choice[k]]
            dist = float(((w.reshape(4, 9) * (1 - m)) ** 2).sum())
            best = dist if best is None else min(best, dist)
    ours = float(((w - w * mask) ** 2).sum())
    assert ours == pytest.approx(best, rel=1e-6)
    assert int((idx < 0).sum()) == 2


def test_keep_kernels_drops_the_cheapest_exactly():
    cost = torch.tensor([[5.0, 1.0, 3.0], [0.5, 4.0, 2.0]])
    keep = keep_kernels(cost, 0.5)
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    with pytest.raises(InvalidConfigError):
        keep_kernels(cost, 1.0)
    with pytest.raises(InvalidConfigError):
        keep_kernels(cost, -0.1)


def test_check_structure_accepts_library_patterns_and_names_offenders():
    lib = [(0, 1, 4, 7), (1, 3, 4, 5)]
    masks = pattern_masks(lib) > 0
    w = torch.zeros(2, 2, 3, 3)
    w.view(4, 9)[0][masks[0]] = 1.0
    w.view(4, 9)[1][masks[1]] = 2.0
    w.view(4, 9)[2, 4] = 1.0  # a subset of a pattern is fine
    info = check_structure(w, lib, 4)
    assert info["empty_kernels"] == 1 and sum(info["patterns_used"].values()) == 3
    bad = w.clone()
    bad.view(4, 9)[3, [0, 2]] = 1.0  # 0 and 2 together fit no pattern
    with pytest.raises(ValueError, match="fit no library pattern"):
        check_structure(bad, lib, 4)
    bad = w.clone()
    bad.view(4, 9)[3] = 1.0
    with pytest.raises(ValueError, match="more than 4"):
        check_structure(bad, lib, 4)


def test_best_patterns_picks_max_kept_energy():
    lib = candidate_patterns(4)
    masks = pattern_masks(lib)
    w = torch.randn(3, 5, 3, 3)
    idx, kept = best_patterns(w, masks)
    energy = w.reshape(3, 5, 9) ** 2
    for o in range(3):
        for c in range(5):
            all_kept = (energy[o, c][None] * masks).sum(1)
            assert kept[o, c] == pytest.approx(float(all_kept.max()))
