"""The report's "compression" section: per-layer structure, FLOPs and errors, plus global totals.

Every pruned 3x3 layer is re-checked against the pattern library here, so a report never describes a
structure the weights do not have."""
from __future__ import annotations

from torch import nn

from worker.engine.layers import CONV3X3, DEPTHWISE, FIRST_CONV, PrunableLayer
from worker.engine.patterns import check_structure


def build_report(student: nn.Module, layers: list[PrunableLayer], pruned: list[PrunableLayer], results: dict,
                 library: list[tuple[int, ...]], rates: dict[str, float], config, synthetic_info: dict,
                 seconds: dict[str, float]) -> dict:
    mods = dict(student.named_modules())
    pruned_names = {l.name for l in pruned}
    entries, conv3_before, conv3_after = [], 0, 0
    flops_before = flops_after = 0
    for layer in layers:
        weight = mods[layer.name].weight.detach()
        total = weight.numel()
        kept = int((weight != 0).sum()) if layer.name in pruned_names else total
        f_before, f_after = 2 * total * layer.positions, 2 * kept * layer.positions
        entry = {"name": layer.name, "kind": layer.kind, "shape": list(weight.shape),
                 "pruned": layer.name in pruned_names, "kept_weights": kept, "total_weights": total,
                 "flops_before": f_before, "flops_after": f_after}
        if layer.name in pruned_names:
            res = results[layer.name]["result"]
            err = res.relative_error
            entry["reconstruction_error"] = None if err != err else err  # NaN (not measured) is not JSON
            if layer.kind in (CONV3X3, FIRST_CONV, DEPTHWISE):
                structure = check_structure(weight.cpu(), library, config.entries)
                n_kernels = weight.shape[0] * weight.shape[1]
                removed = int((res.pattern_idx < 0).sum())
                entry["patterns_used"] = structure["patterns_used"]
                entry["connectivity"] = removed / n_kernels
                entry["target_connectivity"] = rates.get(layer.name, 0.0)
        if layer.kind in (CONV3X3, FIRST_CONV):
            conv3_before += total
            conv3_after += kept
        flops_before += f_before
        flops_after += f_after
        entries.append(entry)
    params_before = sum(p.numel() for p in student.parameters())
    removed = sum(e["total_weights"] - e["kept_weights"] for e in entries)
    return {
        "pattern_library": [list(p) for p in library],
        "layers": entries,
        "params_before": params_before, "params_after": params_before - removed,
        "flops_before": flops_before, "flops_after": flops_after,
        "compression_ratio": conv3_before / conv3_after if conv3_after else None,
        "synthetic": synthetic_info,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
