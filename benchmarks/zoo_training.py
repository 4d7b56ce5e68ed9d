"""Train a zoo model from scratch on the FIRST 5000 CIFAR-10 test images (random crop + flip), deterministic
from a seed, cached as a state dict keyed by architecture + seed + epochs. The LAST 5000 are never trained on."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.zoo_models import ZOO

TRAIN_IMAGES = 5000
# Epochs per architecture: each run stays under ~6-7 min on one core (depthwise convs train slowly on a CPU).
EPOCHS = {"vgg11_q": 20, "mobilenetv2_h": 10, "preact_resnet10_silu": 20}
BATCH = 128


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel zero-padded image and a random horizontal flip, per image."""
    n = len(x)
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=generator)
    dy = torch.randint(0, 9, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(32)).view(n, 1, 32, 1).expand(n, 3, 32, 40)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(32)).view(n, 1, 1, 32).expand(n, 3, 32, 32)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def train(arch: str, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ZOO[arch]()
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.15)
    model.train()
    start = time.monotonic()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(model(augment(x[idx], generator)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"  {arch} epoch {epoch + 1}/{epochs} loss {total / len(x):.3f} ({time.monotonic() - start:.0f} s)",
              flush=True)
    return model.eval()


def trained_model(arch: str, x: torch.Tensor, y: torch.Tensor, seed: int, cache_dir: Path) -> nn.Module:
    """The cached model if present, else trained now and cached."""
    epochs = EPOCHS[arch]
    path = Path(cache_dir) / f"{arch}_seed{seed}_e{epochs}.pt"
    if path.exists():
        model = ZOO[arch]()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train(arch, x[:TRAIN_IMAGES], y[:TRAIN_IMAGES], seed, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model
