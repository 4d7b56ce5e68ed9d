"""Masks for 1x1 convs and Linear layers: unstructured or N:M (2:4) along the input dimension."""
from __future__ import annotations

import torch

from worker.engine.connectivity import check_rate
from worker.engine.errors import InvalidConfigError


def linear_mask(W: torch.Tensor, h_diag: torch.Tensor, mode: str, rate: float) -> torch.Tensor:
    """W: (Cout, D). Saliency w^2 * H_ii (the error removing w alone adds). Returns a bool (Cout, D) mask."""
    saliency = W.float().pow(2) * h_diag.float().clamp_min(0)[None, :]
    if mode == "dense":
        return torch.ones_like(W, dtype=torch.bool)
    if mode == "unstructured":
        n_drop = int(round(check_rate(rate, "linear_rate") * W.numel()))
        keep = torch.ones(W.numel(), dtype=torch.bool)
        keep[torch.argsort(saliency.flatten(), stable=True)[:n_drop]] = False
        return keep.reshape(W.shape)
    if mode == "2:4":
        if W.shape[1] % 4:
            raise InvalidConfigError(f"2:4 sparsity needs an input dimension divisible by 4, got {W.shape[1]}")
        groups = saliency.reshape(W.shape[0], -1, 4)
        top = groups.topk(2, dim=-1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
        return keep.reshape(W.shape)
    raise InvalidConfigError(f"linear_sparsity must be dense, unstructured or 2:4, got {mode!r}")
