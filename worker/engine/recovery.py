"""Data-free recovery after pruning: BatchNorm re-calibration and masked distillation, both on synthetic inputs."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.outputs import primary_output
from worker.engine.schedule import CosineSchedule
from worker.progress import Progress


def _bn_batch_stats(model: nn.Module, images: torch.Tensor, batch: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and variance of every BatchNorm2d's input over `images`, with the model in train-mode BN
    (each layer normalised by its batch statistics, as a recalibration pass sees it)."""
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    sums: dict[str, list] = {n: [0.0, 0.0, 0] for n in bns}
    handles = []
    for name, bn in bns.items():
        def hook(mod, inputs, output, name=name):
            x = inputs[0].double()
            s = sums[name]
            s[0] = s[0] + x.sum((0, 2, 3))
            s[1] = s[1] + (x * x).sum((0, 2, 3))
            s[2] += x.numel() // x.shape[1]
        handles.append(bn.register_forward_hook(hook))
    was_training = {n: m.training for n, m in bns.items()}
    for m in bns.values():
        m.train()
        m.momentum_backup, m.momentum = m.momentum, 0.0  # batch stats used, running stats untouched
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(images[i:i + batch])
    finally:
        for h in handles:
            h.remove()
        for n, m in bns.items():
            m.momentum = m.momentum_backup
            del m.momentum_backup
            m.train(was_training[n])
    out = {}
    for n, (s1, s2, cnt) in sums.items():
        mean = s1 / cnt
        out[n] = (mean.float(), (s2 / cnt - mean * mean).clamp_min(0).float())
    return out


def recalibrate_batchnorm(student: nn.Module, teacher: nn.Module, images: torch.Tensor, batch: int = 128,
                          relative: bool = True) -> int:
    """Re-estimate the student's BatchNorm statistics on synthetic inputs. `relative` keeps the teacher's
    (real-data) statistics and applies only the change the pruning caused on the synthetic inputs:
    mean_s = mean_t + (m_s - m_t), var_s = var_t * v_s / v_t; robust to synthetic data not looking real."""
    s_stats = _bn_batch_stats(student, images, batch)
    t_stats = _bn_batch_stats(teacher, images, batch) if relative else None
    t_mods = dict(teacher.named_modules())
    s_mods = dict(student.named_modules())
    with torch.no_grad():
        for name, (m_s, v_s) in s_stats.items():
            bn = s_mods[name]
            if relative:
                m_t, v_t = t_stats[name]
                tb = t_mods[name]
                bn.running_mean.copy_(tb.running_mean + (m_s - m_t))
                bn.running_var.copy_(tb.running_var * (v_s + bn.eps) / (v_t + bn.eps))
            else:
                bn.running_mean.copy_(m_s)
                bn.running_var.copy_(v_s)
    return len(s_stats)


def _augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    if x.dim() != 4:
        return x
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=g))
    x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], torch.flip(x, dims=(3,)), x)


def distill(student: nn.Module, teacher: nn.Module, images: torch.Tensor, masks: dict[str, torch.Tensor],
            steps: int, progress: Progress, *, lr: float = 1e-4, batch: int = 64, temperature: float = 1.0,
            feature_layers: list[str] | None = None, feature_weight: float = 1.0,
            time_budget_s: float | None = None, seed: int = 0, pool=None, feature_on: str = "output") -> dict:
    """Masked end-to-end distillation on synthetic inputs (augmented each step): KL to the teacher's logits
    plus normalised MSE on intermediate features; masks stay fixed; BatchNorm stays in eval mode.
    With `pool` (an image_pool.ImagePool) each batch is drawn from it and freshly re-inverted first.
    `feature_on`: "output" matches each feature layer's output, "input" its input."""
    if feature_on not in ("output", "input"):
        raise ValueError(f"feature_on must be output or input, got {feature_on!r}")
    if steps <= 0 or len(images) == 0:
        return {"steps": 0}
    params = dict(student.named_parameters())
    trainable = [p for n, p in params.items() if p.dim() > 1]
    for p in student.parameters():
        p.requires_grad_(p.dim() > 1)
    opt = torch.optim.Adam(trainable, lr=lr)
    g = torch.Generator().manual_seed(seed + 7)
    feats_s, feats_t, handles = {}, {}, []
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    for name in feature_layers or []:
        if feature_on == "input":  # the layer's input: for a block's first conv, the residual stream itself
            handles.append(s_mods[name].register_forward_pre_hook(lambda m, a, n=name: feats_s.__setitem__(n, a[0])))
            handles.append(t_mods[name].register_forward_pre_hook(lambda m, a, n=name: feats_t.__setitem__(n, a[0])))
            continue
        handles.append(s_mods[name].register_forward_hook(lambda m, i, o, n=name: feats_s.__setitem__(n, o)))
        handles.append(t_mods[name].register_forward_hook(lambda m, i, o, n=name: feats_t.__setitem__(n, o)))
    schedule = CosineSchedule(lr, steps, None if time_budget_s is None else time.monotonic() + time_budget_s)
    done, last = 0, 0.0
    student.eval()
    try:
        for step in range(steps):
            if not schedule.runs(step):
                break
            if pool is not None:
                xb = _augment(pool.next_batch(student, batch), g)
            else:
                idx = torch.randint(0, len(images), (min(batch, len(images)),), generator=g)
                xb = _augment(images[idx], g)
            with torch.no_grad():
                t_out = primary_output(teacher(xb))
            s_out = primary_output(student(xb))
            loss = F.kl_div(F.log_softmax(s_out / temperature, 1), F.log_softmax(t_out / temperature, 1),
                            reduction="batchmean", log_target=True) * temperature ** 2 if s_out.dim() == 2 else \
                F.mse_loss(s_out, t_out)
            for name in feats_s:
                ft = feats_t[name]
                loss = loss + feature_weight / len(feats_s) * (feats_s[name] - ft).pow(2).mean() / ft.pow(2).mean().clamp_min(1e-12)
            for group in opt.param_groups:
                group["lr"] = schedule.lr(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)
            done, last = step + 1, float(loss.detach())
            if step % 5 == 0:
                progress.check_cancelled()
                progress.update("recover", step, schedule.total, f"distillation loss {last:.4f}")
    finally:
        for h in handles:
            h.remove()
        for p in student.parameters():
            p.requires_grad_(False)
    return {"steps": done, "final_loss": last}
