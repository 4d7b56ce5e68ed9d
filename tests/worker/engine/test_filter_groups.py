"""Pattern groups: filters share one pattern and the kept kernels per input channel, in every mask selection."""
import pytest
import torch

from tests.tiny_models import INPUT_SHAPE, tiny_resnet
from tests.worker.engine.test_admm import _layer_problem
from worker.engine.admm import admm_prune, magnitude_prune, project
from worker.engine.compress import compress_module
from worker.engine.config import CompressionConfig
from worker.engine.filter_groups import assign_groups, group_sum
from worker.engine.patterns import check_structure, pattern_masks
from worker.progress import NullProgress


def _masks_of_groups(mask: torch.Tensor, groups: torch.Tensor) -> list[torch.Tensor]:
    return [mask[groups == g] for g in groups.unique()]


def _shared(mask: torch.Tensor, groups: torch.Tensor) -> bool:
    return all(bool((m == m[:1]).all()) for m in _masks_of_groups(mask, groups))


def test_groups_cover_every_filter_in_groups_of_the_size():
    w = torch.randn(10, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    masks = pattern_masks([(0, 1, 4, 5), (3, 4, 6, 7), (1, 4, 7, 8)])
    groups = assign_groups(w, masks, 4)
    sizes = torch.bincount(groups)
    assert sorted(sizes.tolist()) == [2, 4, 4] and assign_groups(w, masks, 1) is None
    assert torch.equal(group_sum(torch.ones(10, 3), groups)[:, 0], sizes.double().float())


def test_alike_filters_are_grouped_together():
    g = torch.Generator().manual_seed(1)
    masks = pattern_masks([(0, 1, 4, 5), (3, 4, 6, 7)])
    prefer_a = torch.randn(4, 5, 9, generator=g).abs() * masks[0] + 0.01
    prefer_b = torch.randn(4, 5, 9, generator=g).abs() * masks[1] + 0.01
    w = torch.cat([prefer_a, prefer_b])[torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])].reshape(8, 5, 3, 3)
    groups = assign_groups(w, masks, 4)
    assert groups[[0, 2, 4, 6]].unique().numel() == 1 and groups[[1, 3, 5, 7]].unique().numel() == 1


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_projection_shares_patterns_and_kept_kernels_within_groups(rate):
    w = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(2)).double()
    masks = pattern_masks([(0, 1, 4, 5), (3, 4, 6, 7), (1, 4, 7, 8), (2, 4, 5, 8)]).double()
    groups = assign_groups(w, masks, 4)
    mask, idx = project(w, masks, rate, groups)
    assert _shared(mask, groups) and _shared(idx, groups)
    assert int((idx < 0).sum()) == round(rate * 2 * 6) * 4
    # a group of identical filters projects exactly as each filter does alone
    same = w[:1].repeat(8, 1, 1, 1)
    assert torch.equal(project(same, masks, 0.0, groups)[0], project(same, masks, 0.0)[0])


@pytest.mark.parametrize("selection", ["euclidean", "obs-final", "obs-seq"])
def test_admm_with_groups_keeps_the_structure_and_costs_some_error(selection):
    w0, st, lib = _layer_problem()
    masks, scale = pattern_masks(lib), torch.ones(w0.shape[0])
    free = admm_prune(w0, st, masks, 0.25, scale, iterations=10, selection=selection)
    grouped = admm_prune(w0, st, masks, 0.25, scale, iterations=10, selection=selection, group_size=4)
    groups = assign_groups(w0.double(), masks, 4)
    assert _shared(grouped.mask, groups) and _shared(grouped.pattern_idx, groups)
    check_structure(grouped.weight, lib, 4)
    assert free.relative_error <= grouped.relative_error < 1.0
    assert _shared(magnitude_prune(w0, st, masks, 0.25, scale, group_size=4).mask, groups)


def test_compressed_model_has_shared_patterns(tmp_path):
    cfg = CompressionConfig(synthetic_samples=16, synthetic_steps=4, fidelity_samples=8, recovery_steps=0,
                            admm_iterations=5, connectivity=0.5, pattern_group=4, extra={"inversion": {"batch": 8}})
    result = compress_module(tiny_resnet(), INPUT_SHAPE, cfg, NullProgress(), cache_dir=tmp_path)
    assert result.report["pattern_group"] == 4
    for layer in (l for l in result.report["layers"] if l["kind"] == "conv3x3" and l["pruned"]):
        mask = result.masks[layer["name"] + ".weight"].reshape(result.masks[layer["name"] + ".weight"].shape[0], -1)
        rows = {tuple(row.tolist()) for row in mask}
        assert len(rows) <= -(-mask.shape[0] // 4), layer["name"]  # at most one distinct mask per group
