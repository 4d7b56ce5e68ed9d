"""A pool of synthetic inputs that keeps being inverted during distillation (DeepInversion's "adaptive" variant).

Distilling on a fixed set of 128 inverted images over-fits them; here each distillation batch is first moved a
few steps further along the teacher's BatchNorm-statistics objective, plus a competition term that pushes it
towards inputs where student and teacher disagree (1 - Jensen-Shannon), so the student keeps seeing new inputs
that matter. Each pool image keeps its own Adam moments so repeated visits continue one optimisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from worker.engine.outputs import primary_output
from worker.engine.bn_stats import BNStatLoss
from worker.engine.inversion_modes import frozen_copy
from worker.engine.synthetic import InversionSettings, _tv


@dataclass
class PoolSettings:
    inversion_steps: int = 1          # inversion steps on a batch before each distillation step (0 = fixed set)
    lr: float = 0.05                  # Adam step on the pixels (the synthesis ends its cosine schedule near 0)
    competition_weight: float = 1.0   # weight of the teacher-student disagreement term


def _js_agreement(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """1 - Jensen-Shannon divergence (in [0, 1], natural log / ln 2): small where the two models disagree."""
    p, q = t_logits.softmax(1), s_logits.softmax(1)
    m = (0.5 * (p + q)).clamp_min(1e-8)
    js = 0.5 * (p * (p.clamp_min(1e-8) / m).log()).sum(1) + 0.5 * (q * (q.clamp_min(1e-8) / m).log()).sum(1)
    return 1.0 - js.mean() / math.log(2.0)


class ImagePool:
    def __init__(self, teacher: nn.Module, images: torch.Tensor, settings: PoolSettings,
                 inversion: InversionSettings, seed: int = 0):
        self.images = images.detach().clone()
        self.settings, self.inversion = settings, inversion
        self.m = torch.zeros_like(self.images)
        self.v = torch.zeros_like(self.images)
        self.net = frozen_copy(teacher)  # own copy: the BN-statistics hooks must not fire on the teacher
        self.stats = BNStatLoss(self.net, inversion.first_bn_weight)
        self.g = torch.Generator().manual_seed(seed + 11)
        self.order = torch.randperm(len(self.images), generator=self.g)
        self.cursor = 0
        self.steps_done = 0

    def _next_indices(self, batch: int) -> torch.Tensor:
        """Walk the pool in shuffled order so every image is refreshed equally often."""
        if self.cursor + batch > len(self.order):
            self.order = torch.randperm(len(self.images), generator=self.g)
            self.cursor = 0
        idx = self.order[self.cursor:self.cursor + batch]
        self.cursor += batch
        return idx

    def next_batch(self, student: nn.Module, batch: int) -> torch.Tensor:
        idx = self._next_indices(min(batch, len(self.images)))
        for _ in range(self.settings.inversion_steps):
            self._invert_step(student, idx)
        return self.images[idx]

    def _invert_step(self, student: nn.Module, idx: torch.Tensor) -> None:
        s, inv = self.settings, self.inversion
        x = self.images[idx].clone().requires_grad_(True)
        xin = x
        if x.dim() == 4 and inv.jitter > 0:
            dx, dy = (int(v) for v in torch.randint(-inv.jitter, inv.jitter + 1, (2,), generator=self.g))
            xin = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            if bool(torch.rand(1, generator=self.g) < 0.5):
                xin = torch.flip(xin, dims=(3,))
        t_logits = primary_output(self.net(xin))
        loss = self.stats.pop() + inv.l2_weight * x.pow(2).mean()
        if x.dim() == 4:
            loss = loss + inv.tv_weight * _tv(x) * x.shape[-1] * x.shape[-2]
        if s.competition_weight > 0 and t_logits.dim() == 2 and t_logits.shape[1] > 1:
            grads = [p.requires_grad for p in student.parameters()]
            for p in student.parameters():
                p.requires_grad_(False)  # only input gradients: the student's weights are not touched here
            try:
                loss = loss + s.competition_weight * _js_agreement(t_logits, primary_output(student(xin)))
            finally:
                for p, flag in zip(student.parameters(), grads):
                    p.requires_grad_(flag)
        grad, = torch.autograd.grad(loss, x)
        with torch.no_grad():
            m = 0.5 * self.m[idx] + 0.5 * grad  # betas (0.5, 0.9) as in the synthesis
            v = 0.9 * self.v[idx] + 0.1 * grad * grad
            self.m[idx], self.v[idx] = m, v
            self.images[idx] = x.detach() - s.lr * m / (v.sqrt() + 1e-8)
        self.steps_done += 1

    def close(self) -> None:
        self.stats.close()
