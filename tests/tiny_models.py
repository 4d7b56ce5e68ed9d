"""Tiny models for fast tests: the same building blocks as the real CIFAR ResNets, a fraction of the size."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 16, 16)


class TinyBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """Stem, two stages of one residual block each, pooled linear head: 3x3, 1x1, BN, linear."""

    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = TinyBlock(width, width)
        self.layer2 = TinyBlock(width, 2 * width, stride=2)
        self.linear = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


def tiny_resnet(seed: int = 0, width: int = 8) -> TinyResNet:
    """A deterministic tiny ResNet whose BatchNorm running statistics are non-trivial (as after training)."""
    torch.manual_seed(seed)
    model = TinyResNet(width)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, *INPUT_SHAPE[1:]) * 1.5 + 0.2)
    return model.eval()


def export_pt2(model: nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model.eval(), (torch.randn(2, *INPUT_SHAPE[1:]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def export_onnx(model: nn.Module, path: Path) -> Path:
    torch.onnx.export(model.eval(), (torch.randn(2, *INPUT_SHAPE[1:]),), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                      external_data=False)
    return path


def export_torchscript(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.trace(model.eval(), torch.randn(*INPUT_SHAPE)), str(path))
    return path
