"""CIFAR-10 test data for accuracy checks only (the engine never sees data)."""
from __future__ import annotations

import numpy as np
import torch
from benchmarks.shared_assets import CIFAR10_TEST

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DATA = str(CIFAR10_TEST)


def load_cifar10_test(path: str = DATA, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised N x 3 x 32 x 32 float images and int64 labels; `limit` takes an even class mix (first N)."""
    data = np.load(path)
    x, y = data["x"], data["y"]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std, torch.from_numpy(y).long()


@torch.no_grad()
def top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


@torch.no_grad()
def batched_logits(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The model's outputs on `x`, `batch` images at a time (exported models declare a batch range, up to 1024
    for the shared ones)."""
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
