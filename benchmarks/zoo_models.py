"""Three small CIFAR-10 models of families the engine was never tuned on (pure torch, no torchvision), for
benchmarks/zoo_generalisation.py: a VGG with max-pooling, a MobileNetV2 (depthwise 3x3, ReLU6, inverted
residuals) and a pre-activation ResNet with SiLU and 1x1 projection shortcuts. Sized at ~10-20 M MACs per
image so each trains in minutes on one core and a default job stays short."""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.model_zoo import CifarVGG16


class VGG11(CifarVGG16):
    """VGG-11 layout (8 convs, 5 max-pools) at quarter width, BatchNorm after every conv."""

    PLAN = (16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M")


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs (stride-1 stem, three downsamplings), width ~0.5, expansion 4 (not 6: depthwise
    convs train slowly on a CPU)."""

    # (expand, out channels, repeats, first stride)
    PLAN = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2), (4, 96, 1, 1))

    def __init__(self, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True)]
        cin = 16
        for expand, cout, repeats, stride in self.PLAN:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(256, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class PreActBlock(nn.Module):
    """BN -> SiLU -> conv, twice; the shortcut is a 1x1 conv on the pre-activated input when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.act = nn.SiLU()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        out = self.act(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return self.conv2(self.act(self.bn2(out))) + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet-10 (one block per stage, 4 stages of width 16-32-64-128), SiLU."""

    def __init__(self, classes: int = 10, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(PreActBlock(cin, width, 1 if i == 0 else 2))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.act = nn.BatchNorm2d(cin), nn.SiLU()
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        out = self.act(self.bn(self.blocks(self.stem(x))))
        return self.classifier(out.mean((2, 3)))


ZOO = {"vgg11_q": VGG11, "mobilenetv2_h": MobileNetV2, "preact_resnet10_silu": PreActResNet}


def macs_per_image(model: nn.Module, shape=(1, 3, 32, 32)) -> int:
    """Conv and Linear multiply-accumulates of one image (forward hooks)."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += module.weight.numel() * (output[0, 0].numel() if output.dim() == 4 else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(shape))
    for handle in handles:
        handle.remove()
    return total
