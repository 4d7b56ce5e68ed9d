import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.admm import magnitude_prune
from worker.engine.depthwise_refit import depthwise_stats, refit_depthwise
from worker.engine.patterns import pattern_library, pattern_masks


def _layer(seed=0, channels=6, multiplier=1, stride=1):
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, channels * multiplier, 3, stride, 1, groups=channels, bias=True).eval()
    return nn.Sequential(conv).eval(), conv


def _images(seed=1, channels=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, channels, 10, 10, generator=g)
    return F.avg_pool2d(x, 3, 1, 1) + 0.3 * x  # correlated neighbours, like real feature maps


def _error(conv, weight, x):
    with torch.no_grad():
        want = conv(x) - conv.bias.view(1, -1, 1, 1)
        got = F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return float(((got - want) ** 2).sum() / (want ** 2).sum())


def test_refit_beats_magnitude_projection_and_reports_its_true_error():
    for multiplier, stride in ((1, 1), (2, 2)):
        model, conv = _layer(multiplier=multiplier, stride=stride)
        x = _images()
        w0 = conv.weight.detach().clone()
        masks = pattern_masks(pattern_library([w0], 4, 8))
        scale = torch.ones(w0.shape[0])
        res = refit_depthwise(w0, *depthwise_stats(model, conv, model, conv, x, batch=8), masks, 0.0, scale)
        base = magnitude_prune(w0, None, masks, 0.0, scale, refit=False)
        assert _error(conv, res.weight, x) < 0.8 * _error(conv, base.weight, x)
        assert abs(_error(conv, res.weight, x) - res.relative_error) < 1e-3  # the report's number is the real one
        kept = res.mask.reshape(-1, 9)
        assert (kept.sum(1) == 4).all() and (res.weight.reshape(-1, 9)[~kept] == 0).all()
        fits = (~kept[:, None, :] | (masks > 0)[None]).all(-1).any(-1)
        assert fits.all()


def test_connectivity_removes_the_cheapest_kernels_by_post_bn_energy():
    model, conv = _layer(channels=8)
    x = _images(channels=8)
    w0 = conv.weight.detach().clone()
    masks = pattern_masks(pattern_library([w0], 4, 8))
    scale = torch.ones(8)
    scale[3] = 1e-3  # its BN all but silences channel 3: it goes first
    res = refit_depthwise(w0, *depthwise_stats(model, conv, model, conv, x, batch=16), masks, 0.25, scale)
    empty = (res.weight.reshape(8, 9) == 0).all(1)
    assert int(empty.sum()) == 2 and bool(empty[3])
    assert (res.pattern_idx.flatten()[empty] == -1).all() and (res.pattern_idx.flatten()[~empty] >= 0).all()
