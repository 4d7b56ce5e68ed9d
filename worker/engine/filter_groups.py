"""Pattern groups: `size` filters of a layer share one pattern, and the keep/remove decision, per input channel.

Why: the compiled kernels (kernels/blocking.py) register-block 4-6 filters; when every filter of a block uses the
same (channel, tap) positions, each input load feeds an FMA for every filter and the mask loops run at the FMA
peak instead of one-filter loops bound by FMA latency. Measured 1.1-1.5x faster 3x3 layers (docs/benchmarks/
kernels.md). The compiler finds the groups from the zeros alone (kernels/format.py's filter order), so grouped
filters need not be neighbours: groups are chosen here by how alike the filters' pattern preferences are.
"""
from __future__ import annotations

import torch

from worker.engine.errors import InvalidConfigError

MAX_GROUP = 16


def check_group_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_GROUP:
        raise InvalidConfigError(f"pattern_group must be an integer in [1, {MAX_GROUP}], got {size!r}")
    return size


def assign_groups(weight: torch.Tensor, masks: torch.Tensor, size: int) -> torch.Tensor | None:
    """Group id per filter (Cout,) for a (Cout, Cin, 3, 3) weight, or None for size 1 (every kernel on its own).

    Greedy: the filter with the most energy left seeds a group, which takes the `size - 1` remaining filters whose
    per-kernel pattern preferences (the fraction of each kernel's energy every pattern keeps, weighted by the
    kernel's share of the filter's energy) agree most with the group's so far."""
    if size <= 1:
        return None
    cout, cin = weight.shape[:2]
    energy = weight.detach().double().reshape(cout, cin, 9).pow(2)
    per_kernel = energy.sum(-1, keepdim=True)
    kept = (energy @ masks.double().T.to(energy.device)) / per_kernel.clamp_min(1e-30)      # Cout x Cin x P
    share = per_kernel / per_kernel.sum(1, keepdim=True).clamp_min(1e-30)
    profile = (kept * share.sqrt()).reshape(cout, -1)
    remaining = sorted(range(cout), key=lambda f: -float(energy[f].sum()))
    groups = torch.empty(cout, dtype=torch.long)
    group = 0
    while remaining:
        seed = remaining.pop(0)
        members, centre = [seed], profile[seed].clone()
        while len(members) < size and remaining:
            scores = profile[remaining] @ centre
            pick = remaining.pop(int(scores.argmax()))
            members.append(pick)
            centre += profile[pick]
        groups[members] = group
        group += 1
    return groups.to(weight.device)


def group_sum(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sum the rows (dim 0, one per filter) of each group: (Cout, ...) -> (n_groups, ...)."""
    out = torch.zeros((int(groups.max()) + 1, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, groups.to(values.device), values)
