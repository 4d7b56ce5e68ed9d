"""Fidelity without labels: how closely the pruned model follows the original on held-out synthetic inputs."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.outputs import primary_output


@torch.no_grad()
def measure_fidelity(teacher: nn.Module, student: nn.Module, images: torch.Tensor, layer_names: list[str],
                     batch: int = 128) -> dict:
    """Top-1 agreement, mean KL(teacher || student), mean output cosine, per-layer relative error
    ||y_s - y_t||^2 / ||y_t||^2 of the named layers' outputs, and the teacher's mean top-1 probability
    (how much the inputs look like something the model knows: on real data it is near 1)."""
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    err = {n: [0.0, 0.0] for n in layer_names}
    cur: dict[str, torch.Tensor] = {}
    handles = []
    for n in layer_names:
        handles.append(t_mods[n].register_forward_hook(lambda m, i, o, n=n: cur.__setitem__(n, o)))

        def s_hook(m, i, o, n=n):
            t = cur.pop(n)
            err[n][0] += float((o - t).double().pow(2).sum())
            err[n][1] += float(t.double().pow(2).sum())
        handles.append(s_mods[n].register_forward_hook(s_hook))
    agree = kl = cos = confidence = 0.0
    count = 0
    try:
        for i in range(0, len(images), batch):
            xb = images[i:i + batch]
            t_out = primary_output(teacher(xb))
            s_out = primary_output(student(xb))  # runs second so each student hook finds the teacher's output of that layer
            t_flat, s_flat = t_out.reshape(len(xb), -1), s_out.reshape(len(xb), -1)
            cos += float(F.cosine_similarity(s_flat, t_flat, dim=1).sum())
            if _has_classes(t_out):  # class scores on dim 1: per sample, or per position of a map
                positions = t_out[:, 0].numel() / len(xb)
                agree += float((t_out.argmax(1) == s_out.argmax(1)).sum()) / positions
                confidence += float(F.softmax(t_out, 1).amax(1).sum()) / positions
                # in float64: float32 rounding read -7e-9 for a model the pruning barely changed, and KL >= 0
                kl += max(0.0, float(F.kl_div(F.log_softmax(s_out.double(), 1), F.log_softmax(t_out.double(), 1),
                                              reduction="sum", log_target=True))) / positions
            count += len(xb)
    finally:
        for h in handles:
            h.remove()
    out = {"samples": count, "output_cosine": cos / max(count, 1),
           "layers": [{"name": n, "relative_error": (e / d if d > 0 else 0.0)} for n, (e, d) in err.items()]}
    if _has_classes(t_out):
        out["top1_agreement"] = agree / max(count, 1)
        out["mean_kl"] = kl / max(count, 1)
        out["teacher_confidence"] = confidence / max(count, 1)
    return out


def _has_classes(out: torch.Tensor) -> bool:
    """Logits (N, classes) or a class map (N, classes, H, W): top-1 and KL are defined on dim 1."""
    return out.dim() >= 2 and out.shape[1] > 1
