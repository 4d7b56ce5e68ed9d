"""Connectivity pruning: remove whole 3x3 kernels, the ones whose loss costs least."""
from __future__ import annotations

import torch

from worker.engine.errors import InvalidConfigError


def check_rate(rate: float, what: str = "connectivity") -> float:
    if not (isinstance(rate, (int, float)) and 0.0 <= float(rate) < 1.0):
        raise InvalidConfigError(f"{what} must be in [0, 1), got {rate!r}")
    return float(rate)


def kernels_to_drop(rate: float, n_kernels: int) -> int:
    return int(round(check_rate(rate) * n_kernels))


def keep_kernels(cost: torch.Tensor, rate: float) -> torch.Tensor:
    """Bool mask over kernels (same shape as `cost`) keeping all but the `rate` fraction with the lowest cost.
    Ties broken by position so the result is deterministic."""
    n_drop = kernels_to_drop(rate, cost.numel())
    keep = torch.ones(cost.numel(), dtype=torch.bool, device=cost.device)
    if n_drop:
        order = torch.argsort(cost.flatten(), stable=True)
        keep[order[:n_drop]] = False
    return keep.reshape(cost.shape)
