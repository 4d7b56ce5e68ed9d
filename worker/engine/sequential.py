"""The layer-by-layer pass: each layer in execution order sees the already-pruned prefix (student inputs)
and the dense model's output (teacher targets) and is pruned by ADMM; optionally (extra.bn_correction, on by default) the next
BatchNorm's mean absorbs the shift measured on the synthetic inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from worker.engine.admm import PruneResult, admm_prune, magnitude_prune, objective, solve_masked
from worker.engine.depthwise_refit import depthwise_stats, fits_patches, refit_depthwise
from worker.engine.layer_stats import LayerStats, accumulate
from worker.engine.layers import CONV1X1, CONV3X3, DEPTHWISE, FIRST_CONV, LINEAR, PrunableLayer
from worker.engine.residual_targets import ResidualTarget, bn_slope, shortcut_node
from worker.engine.sparsity import linear_mask
from worker.progress import Progress


@dataclass
class PrunePlan:
    library_masks: torch.Tensor      # P x 9 float
    rates: dict[str, float]          # connectivity per 3x3 layer name
    method: str = "admm"             # "admm" | "magnitude" (projection + refit) | "magnitude-only" (no refit)
    admm_iterations: int = 30
    linear_sparsity: str = "dense"
    linear_rate: float = 0.5
    bn_correction: bool = True  # effect measured within noise (+-0.7 points), see docs/benchmarks/engine.md
    batch: int = 64
    ridge: float = 1e-4  # pull towards the original weights in the refit (relative to mean input energy)
    selection: str = "euclidean"  # how masks are priced, see admm.admm_prune
    obs_damp: float = 1e-2
    # fit convs feeding a residual add so the SUM matches the dense model (residual_targets.py): measured +1.3 (ResNet-20,
    # two input seeds), +0.6 / +2.1 (ResNet-56, pattern-only / 50% connectivity), docs/benchmarks/engine.md
    residual_targets: bool = True


def bn_scale(bn: nn.Module | None, cout: int) -> torch.Tensor:
    if bn is None:
        return torch.ones(cout)
    return (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).cpu()


def prunes(layer: PrunableLayer, plan: PrunePlan, config) -> bool:
    if layer.kind == CONV3X3:
        return True
    if layer.kind == FIRST_CONV:
        return bool(config.prune_first_conv)
    if layer.kind == DEPTHWISE:
        return bool(config.prune_depthwise) and tuple(layer.module.weight.shape[2:]) == (3, 3)
    if layer.kind in (CONV1X1, LINEAR):
        return plan.linear_sparsity != "dense"
    return False


def prune_sequentially(student: nn.Module, teacher: nn.Module, layers: list[PrunableLayer], images: torch.Tensor,
                       plan: PrunePlan, config, progress: Progress) -> dict[str, dict]:
    """Mutates `student` in place. Returns per layer name: {"result": PruneResult, "stats_rows": n}."""
    t_modules = dict(teacher.named_modules())
    s_modules = dict(student.named_modules())
    todo = [l for l in layers if prunes(l, plan, config)]
    results: dict[str, dict] = {}
    for i, layer in enumerate(todo):
        progress.check_cancelled()
        progress.update("prune", i, len(todo), layer.name)
        s_layer, t_layer = s_modules[layer.name], t_modules[layer.name]
        w0 = s_layer.weight.detach().clone()
        bn = s_modules.get(layer.bn_name) if layer.bn_name else None
        scale = bn_scale(bn, w0.shape[0])
        if plan.method == "magnitude-only" or layer.kind == DEPTHWISE:
            st = None  # depthwise: one input channel per kernel, its own per-channel fit (depthwise_refit.py)
        else:
            shift = None
            if plan.residual_targets:
                node = shortcut_node(student, layer.name, layer.bn_name)
                if node is not None:
                    shift = ResidualTarget(student, teacher, node.name, bn_slope(bn, w0.shape[0]))
            st = accumulate(student, s_layer, teacher, t_layer, images, plan.batch, target_shift=shift)
        if layer.kind == DEPTHWISE and plan.method != "magnitude-only" and config.extra.get("depthwise_refit", True) \
                and fits_patches(s_layer):
            grams = depthwise_stats(student, s_layer, teacher, t_layer, images, plan.batch)
            res = refit_depthwise(w0, *grams, plan.library_masks, plan.rates.get(layer.name, 0.0), scale,
                                  ridge=plan.ridge)
        elif layer.kind == DEPTHWISE:
            res = magnitude_prune(w0, None, plan.library_masks, plan.rates.get(layer.name, 0.0), scale, refit=False)
        elif layer.kind in (CONV3X3, FIRST_CONV):
            rate = plan.rates.get(layer.name, 0.0)
            if plan.method == "admm":
                res = admm_prune(w0, st, plan.library_masks, rate, scale, plan.admm_iterations, ridge=plan.ridge,
                                 selection=plan.selection, obs_damp=plan.obs_damp)
            else:
                res = magnitude_prune(w0, st, plan.library_masks, rate, scale, refit=plan.method == "magnitude",
                                      ridge=plan.ridge)
        else:
            res = _prune_dense_layer(w0, st, plan, scale)
        with torch.no_grad():
            s_layer.weight.copy_(res.weight)
        if plan.bn_correction and st is not None:
            _correct_mean(s_layer, bn, res.weight, st)
        results[layer.name] = {"result": res}
    progress.update("prune", len(todo), len(todo), "done")
    return results


def _prune_dense_layer(w0: torch.Tensor, st: LayerStats | None, plan: PrunePlan, scale) -> PruneResult:
    """1x1 convs and Linear layers: unstructured or 2:4 masks chosen by an OBS-style saliency, then refit."""
    W = w0.reshape(w0.shape[0], -1)
    hdiag = st.H.diagonal().float() if st is not None else torch.ones(W.shape[1])
    mask = linear_mask(W, hdiag, plan.linear_sparsity, plan.linear_rate)
    if st is None:
        new = W * mask
        return PruneResult(new.reshape(w0.shape), mask.reshape(w0.shape), torch.empty(0), float("nan"))
    new = solve_masked(st, mask).float()
    return PruneResult(new.reshape(w0.shape) * mask.reshape(w0.shape), mask.reshape(w0.shape), torch.empty(0),
                       objective(new, st, scale))


def _correct_mean(layer: nn.Module, bn: nn.Module | None, weight: torch.Tensor, st: LayerStats) -> None:
    """Shift the next BatchNorm's running mean (or the layer bias) by the mean output change the pruning
    caused on the synthetic inputs, so the student's features stay centred like the teacher's."""
    W = weight.reshape(weight.shape[0], -1).double()
    shift = ((W @ st.a_sum) - st.y_sum) / max(st.rows, 1)
    with torch.no_grad():
        if bn is not None:
            bn.running_mean.add_(shift.to(bn.running_mean))
        elif getattr(layer, "bias", None) is not None:
            layer.bias.sub_(shift.to(layer.bias))
