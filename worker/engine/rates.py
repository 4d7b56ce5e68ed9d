"""Per-layer connectivity rates for a global target (a compression ratio, or a fraction of the 3x3 FLOPs or
kernels), allocated by measured sensitivity.

One pass of the dense model over a few synthetic inputs gives each layer's per-input-channel 3x3 Gram blocks.
Removing a (pattern-projected) kernel z of output channel o, input channel c costs about s_o^2 z^T H_c z of
that layer's post-BatchNorm output energy. Kernels are ranked globally by cost as a fraction of their layer's
output energy and the cheapest are removed until the target is met, so robust layers give up more kernels.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.errors import InvalidConfigError
from worker.engine.layers import CONV3X3, FIRST_CONV, PrunableLayer
from worker.engine.patterns import best_patterns
from worker.engine.sequential import bn_scale

MAX_RATE = 0.9


@torch.no_grad()
def channel_grams(model: nn.Module, layers: list[PrunableLayer], images: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
    """Cin x 9 x 9 Gram blocks of each layer's im2col input, from the dense model."""
    grams: dict[str, torch.Tensor] = {}
    handles = []
    modules = dict(model.named_modules())
    for layer in layers:
        mod = modules[layer.name]

        def hook(m, inputs, output, name=layer.name):
            cols = F.unfold(inputs[0], m.kernel_size, m.dilation, m.padding, m.stride)  # N x Cin*9 x L
            cols = cols.reshape(cols.shape[0], m.in_channels, 9, -1).double()
            g = torch.einsum("ncil,ncjl->cij", cols, cols)
            grams[name] = grams[name] + g if name in grams else g
        handles.append(mod.register_forward_hook(hook))
    try:
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
    finally:
        for h in handles:
            h.remove()
    return grams


def kernel_costs(weight: torch.Tensor, gram: torch.Tensor, masks: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Fraction of the layer's output energy lost by removing each pattern-projected kernel (Cout x Cin)."""
    idx, _ = best_patterns(weight, masks)
    w = weight.reshape(weight.shape[0], weight.shape[1], 9).double()
    z = w * masks.double()[idx]
    s2 = scale.double().pow(2)[:, None]
    cost = torch.einsum("oci,cij,ocj->oc", z, gram, z) * s2
    total = (torch.einsum("oci,cij,ocj->oc", w, gram, w) * s2).sum().clamp_min(1e-30)
    return (cost / total).float()


def allocate_rates(costs: dict[str, torch.Tensor], entries: int, target_compression: float,
                   fixed_weights: int = 0, total_weights: int | None = None) -> dict[str, float]:
    """Connectivity per layer so that (all 3x3 weights) / (kept 3x3 weights) reaches `target_compression`.
    `fixed_weights`: 3x3 weights in layers left dense (they count as kept)."""
    n_kernels = {n: c.numel() for n, c in costs.items()}
    total = total_weights if total_weights is not None else 9 * sum(n_kernels.values()) + fixed_weights
    if not target_compression or target_compression <= 0:
        raise InvalidConfigError(f"target_compression must be a positive ratio, got {target_compression!r}")
    budget = total / target_compression - fixed_weights  # weights the pruned layers may keep
    keep_kernels = budget / entries
    all_kernels = sum(n_kernels.values())
    n_drop = int(round(all_kernels - keep_kernels))
    if n_drop <= 0:
        return {n: 0.0 for n in costs}
    max_drop = sum(int(MAX_RATE * k) for k in n_kernels.values())
    if n_drop > max_drop:
        best = total / (fixed_weights + entries * (all_kernels - max_drop))
        raise InvalidConfigError(f"target_compression {target_compression} is out of reach with {entries} entries per "
                                 f"kernel and at most {MAX_RATE:.0%} of each layer's kernels removed (best {best:.2f})")
    return drop_cheapest(costs, n_drop)


def drop_cheapest(costs: dict[str, torch.Tensor], amount: float, unit: dict[str, float] | None = None) -> dict[str, float]:
    """Connectivity per layer after removing the globally cheapest kernels until `amount` units are gone.

    `unit`: what one kernel of each layer is worth (default 1: count kernels; a layer's output positions: count
    FLOPs); kernels are ranked by cost per unit. No layer loses more than MAX_RATE of its kernels."""
    names = list(costs)
    unit = unit or {n: 1.0 for n in names}
    sizes = torch.cat([torch.full((costs[n].numel(),), float(unit[n]), dtype=torch.float64) for n in names])
    flat = torch.cat([costs[n].flatten().double() for n in names]) / sizes
    owner = torch.cat([torch.full((costs[n].numel(),), i) for i, n in enumerate(names)])
    dropped = torch.zeros(len(names), dtype=torch.long)
    caps = torch.tensor([int(MAX_RATE * costs[n].numel()) for n in names])
    remaining = float(amount) - 1e-9 * float(sizes.max())  # float sums: stop at the last whole kernel
    for k in torch.argsort(flat, stable=True).tolist():
        if remaining <= 0:
            break
        i = int(owner[k])
        if dropped[i] < caps[i]:
            dropped[i] += 1
            remaining -= float(sizes[k])
    return {n: float(dropped[i]) / costs[n].numel() for i, n in enumerate(names)}


def connectivity_rates(teacher: nn.Module, three: list[PrunableLayer], layers: list[PrunableLayer],
                       images: torch.Tensor, masks: torch.Tensor, config) -> dict[str, float]:
    """Per-layer connectivity of the pattern-pruned 3x3 layers, from `target_compression` or `connectivity`.

    `connectivity` is the fraction removed: with `connectivity_allocation` "uniform" of every layer's kernels; with
    "weights" of all these kernels, the globally cheapest; with "flops" of these layers' FLOPs, the kernels that
    cost the least per FLOP they save (so large-map layers, where a kernel is worth more FLOPs, give up more).
    Above MAX_RATE no layer could give up more than its share, so the rate is applied uniformly."""
    if not three:  # e.g. a MobileNet with prune_depthwise: only depthwise layers, which get a uniform rate
        return {}
    uniform = config.connectivity_allocation == "uniform" or config.connectivity > MAX_RATE
    if config.target_compression is None and (config.connectivity == 0 or uniform):
        return {l.name: float(config.connectivity) for l in three}
    grams = channel_grams(teacher, three, images[:64])
    mods = dict(teacher.named_modules())
    costs = {l.name: kernel_costs(l.module.weight.detach(), grams[l.name], masks,
                                  bn_scale(mods.get(l.bn_name) if l.bn_name else None, l.module.weight.shape[0]))
             for l in three}
    if config.target_compression is None:
        kernels = {l.name: costs[l.name].numel() for l in three}
        unit = {l.name: float(l.positions) for l in three} if config.connectivity_allocation == "flops" else \
            {l.name: 1.0 for l in three}
        return drop_cheapest(costs, config.connectivity * sum(kernels[n] * unit[n] for n in kernels), unit)
    names = {l.name for l in three}
    fixed = sum(l.module.weight.numel() for l in layers if l.kind in (CONV3X3, FIRST_CONV) and l.name not in names)
    return allocate_rates(costs, config.entries, float(config.target_compression), fixed_weights=fixed)
