"""Shared by the format tests: tiny exported models and a deterministic hand pruning."""
from __future__ import annotations


import torch
from torch import nn
from benchmarks.shared_assets import SHARED_MODELS

SHARED = SHARED_MODELS


def layer_types(module: nn.Module) -> dict[str, str]:
    return {name: type(m).__name__ for name, m in module.named_modules()
            if isinstance(m, (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Linear))}


def prune_by_hand(module: nn.Module) -> None:
    """Zero a checkerboard of 3x3 kernel entries and nudge BN statistics, like a compression run would."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                mask = torch.zeros(3, 3, dtype=torch.bool)
                mask[1, 1] = mask[0, 1] = mask[1, 0] = True
                m.weight.mul_(mask)
                m.weight[: m.weight.shape[0] // 2] = 0  # whole kernels gone (connectivity)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(0.01)
                m.running_var.mul_(1.1)


def outputs(module, x):
    with torch.no_grad():
        out = module(x)
    return out[0] if isinstance(out, (tuple, list)) else out
