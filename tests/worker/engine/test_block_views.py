import torch

from worker.engine.block_reconstruction import BlockSettings
from worker.engine.block_views import crop_views, cutmix_views


def _x(n=6, size=12):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_cutmix_views_paste_a_box_of_another_input():
    x = _x()
    out = cutmix_views(x, 5, torch.Generator().manual_seed(1))
    assert out.shape == (5, *x.shape[1:])
    for view in out:
        # every pixel column comes from some input at the same place; most of the view from one input
        same = (view[None] == x).all(dim=1)  # inputs x H x W: where the view equals that input
        assert same.any(dim=0).all()
        assert same.float().mean(dim=(1, 2)).max() >= 0.5 - 1e-6


def test_crop_views_are_deterministic_and_of_the_input_size():
    x = _x(size=32)
    a = crop_views(x, 4, torch.Generator().manual_seed(2))
    b = crop_views(x, 4, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    assert crop_views(_x(size=4), 2, torch.Generator().manual_seed(3)).shape == (2, 3, 4, 4)  # tiny inputs too


def test_the_block_stage_uses_one_cutmix_and_one_crop_copy_by_default():
    s = BlockSettings()
    assert (s.cutmix_views, s.crop_views) == (1, 1)
