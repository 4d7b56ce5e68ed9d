"""Pattern sparsity for 3x3 kernels: the candidate patterns, a per-model library chosen from the model's
own weights, and the per-kernel projection onto the library.

A pattern is a sorted tuple of flat 3x3 indices (row*3+col) that a kernel keeps; the centre (4) is always kept.
"""
from __future__ import annotations

from itertools import combinations

import torch

from worker.engine.errors import InvalidConfigError

CENTRE = 4


def candidate_patterns(entries: int) -> list[tuple[int, ...]]:
    """Every set of `entries` positions of a 3x3 kernel that includes the centre."""
    if not 1 <= entries <= 9:
        raise InvalidConfigError(f"entries must be between 1 and 9, got {entries}")
    others = [i for i in range(9) if i != CENTRE]
    return [tuple(sorted((CENTRE,) + c)) for c in combinations(others, entries - 1)]


def pattern_masks(library: list[tuple[int, ...]], device=None) -> torch.Tensor:
    """P x 9 float 0/1 matrix, one row per pattern."""
    masks = torch.zeros(len(library), 9, device=device)
    for i, p in enumerate(library):
        masks[i, list(p)] = 1.0
    return masks


def pattern_library(weights: list[torch.Tensor], entries: int, library_size: int) -> list[tuple[int, ...]]:
    """Greedy choice of `library_size` patterns that together keep the most (per-kernel normalised) energy
    of the model's own 3x3 kernels: each round adds the pattern that raises sum_k max_{p in lib} kept(k, p) most."""
    if library_size < 1:
        raise InvalidConfigError(f"library_size must be at least 1, got {library_size}")
    candidates = candidate_patterns(entries)
    if library_size >= len(candidates):
        return candidates
    kernels = torch.cat([w.detach().reshape(-1, 9).float() for w in weights])
    energy = kernels.pow(2)
    energy = energy / energy.sum(1, keepdim=True).clamp_min(1e-30)
    kept = energy @ pattern_masks(candidates).T  # K x C
    best = torch.zeros(kept.shape[0])
    chosen: list[int] = []
    for _ in range(library_size):
        gain = torch.clamp(kept - best[:, None], min=0).sum(0)
        if chosen:
            gain[chosen] = -1.0
        pick = int(gain.argmax())
        chosen.append(pick)
        best = torch.maximum(best, kept[:, pick])
    chosen = _improve_by_swaps(kept, chosen)
    return sorted(candidates[i] for i in chosen)


def _improve_by_swaps(kept: torch.Tensor, chosen: list[int], rounds: int = 5) -> list[int]:
    """Greedy can lock in a compromise pattern; swap single members while the total kept energy rises."""
    def score(sel):
        return float(kept[:, sel].max(1).values.sum())
    current = score(chosen)
    for _ in range(rounds):
        improved = False
        for slot in range(len(chosen)):
            rest = chosen[:slot] + chosen[slot + 1:]
            base = kept[:, rest].max(1).values if rest else torch.zeros(kept.shape[0])
            totals = torch.maximum(base[:, None], kept).sum(0)
            totals[rest] = -1.0
            pick = int(totals.argmax())
            if float(totals[pick]) > current * (1 + 1e-9) and pick != chosen[slot]:
                chosen = rest[:slot] + [pick] + rest[slot:]
                current = float(totals[pick])
                improved = True
        if not improved:
            break
    return chosen


def best_patterns(weight: torch.Tensor, masks: torch.Tensor, metric: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each kernel of a (Cout, Cin, 3, 3) weight pick the library pattern keeping most energy.
    Returns (pattern index per kernel [Cout, Cin], kept energy per kernel [Cout, Cin]).
    `metric` (optional [Cout] weights) scales each output channel's energy; it does not change the choice."""
    energy = weight.reshape(weight.shape[0], weight.shape[1], 9).pow(2)
    kept = energy @ masks.T.to(energy)  # Cout x Cin x P
    best, idx = kept.max(-1)
    if metric is not None:
        best = best * metric[:, None]
    return idx, best


def expand_mask(pattern_idx: torch.Tensor, keep_kernel: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Bool (Cout, Cin, 3, 3) mask from pattern indices and the kernels kept by connectivity pruning."""
    m = masks.to(pattern_idx.device)[pattern_idx] > 0  # Cout x Cin x 9
    m = m & keep_kernel[..., None]
    return m.reshape(*pattern_idx.shape, 3, 3)


def check_structure(weight: torch.Tensor, library: list[tuple[int, ...]], entries: int) -> dict:
    """Verify a pruned 3x3 weight: every kernel has at most `entries` non-zeros, all inside one library pattern.
    Returns {"patterns_used": {idx: count}, "empty_kernels": n}; raises ValueError naming the first offender."""
    flat = weight.detach().reshape(-1, 9) != 0
    masks = pattern_masks(library) > 0
    counts: dict[str, int] = {}
    empty = 0
    for k, nz in enumerate(flat):
        n = int(nz.sum())
        if n == 0:
            empty += 1
            continue
        if n > entries:
            raise ValueError(f"kernel {k} keeps {n} weights, more than {entries}")
        fits = (~nz | masks).all(1)  # patterns that contain every non-zero
        if not fits.any():
            raise ValueError(f"kernel {k} non-zeros {nz.nonzero().flatten().tolist()} fit no library pattern")
        key = str(int(fits.nonzero()[0]))
        counts[key] = counts.get(key, 0) + 1
    return {"patterns_used": counts, "empty_kernels": empty}
