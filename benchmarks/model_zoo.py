"""Benchmark models in plain torch (no torchvision) and random pattern masks for them.

ResNet-18 / ResNet-50 follow the ImageNet layout (7x7 stem, max-pool, stride in the 3x3 conv: v1.5),
VGG-16 the usual CIFAR variant with BatchNorm. Weights are random; BN statistics are randomised
so folding does real work. Speed does not depend on the values, only on where the zeros are.
`resnet56_cifar` is the shared pretrained ResNet-56 (the model a default job prunes; not in the default list,
since it needs ../shared), with the same random masks.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

CENTRE = 4


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for b in range(count):
                blocks.append(block(cin, width, 2 if (b == 0 and index > 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class CifarVGG16(nn.Module):
    PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for item in self.PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, item, 3, 1, 1, bias=False), nn.BatchNorm2d(item), nn.ReLU()]
                cin = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def resnet18() -> nn.Module:
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2])


def resnet50() -> nn.Module:
    return ImageNetResNet(Bottleneck, [3, 4, 6, 3])


def vgg16_cifar() -> nn.Module:
    return CifarVGG16()


def resnet56_cifar() -> nn.Module:
    from benchmarks.cifar_resnet import load_cifar_resnet
    from benchmarks.shared_assets import SHARED_MODELS
    return load_cifar_resnet(SHARED_MODELS / "resnet56_cifar10.pt2")


MODELS = {  # name -> (factory, input shape at batch 1)
    "resnet18": (resnet18, (1, 3, 224, 224)),
    "vgg16_cifar": (vgg16_cifar, (1, 3, 32, 32)),
    "resnet50": (resnet50, (1, 3, 224, 224)),
}
EXTRA_MODELS = {"resnet56_cifar": (resnet56_cifar, (1, 3, 32, 32))}


def pattern_library(size: int = 8, entries: int = 4, seed: int = 0) -> list[tuple[int, ...]]:
    """`size` distinct 3x3 patterns of `entries` positions, each keeping the centre."""
    others = [i for i in range(9) if i != CENTRE]
    choices = [tuple(sorted((CENTRE, *c))) for c in itertools.combinations(others, entries - 1)]
    order = torch.randperm(len(choices), generator=torch.Generator().manual_seed(seed))
    return [choices[i] for i in order[:size].tolist()]


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(1 + 0.1 * torch.randn(n, generator=gen))
            module.bias.copy_(0.1 * torch.randn(n, generator=gen))
            module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            module.running_var.copy_(1 + 0.1 * torch.rand(n, generator=gen))


@torch.no_grad()
def apply_pattern_masks(model: nn.Module, connectivity: float = 0.0, library_size: int = 8, seed: int = 0) -> int:
    """Give every 3x3 conv (except 3-channel stems) a random pattern per kernel, then drop a
    `connectivity` fraction of whole kernels. Returns how many convs were masked."""
    gen = torch.Generator().manual_seed(seed)
    library = pattern_library(library_size, seed=seed)
    masks = torch.zeros(len(library), 9)
    for index, pattern in enumerate(library):
        masks[index, list(pattern)] = 1
    count = 0
    for module in model.modules():
        if not (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.in_channels > 3
                and module.groups == 1):
            continue
        k, c = module.weight.shape[:2]
        choice = torch.randint(len(library), (k, c), generator=gen)
        mask = masks[choice]
        if connectivity > 0:
            dropped = torch.randperm(k * c, generator=gen)[: round(k * c * connectivity)]
            mask.view(k * c, 9)[dropped] = 0
        module.weight.mul_(mask.view(k, c, 3, 3))
        count += 1
    return count


def build(name: str, connectivity: float = 0.0, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A pattern-pruned benchmark model in eval mode and its batch-1 input shape."""
    factory, shape = {**MODELS, **EXTRA_MODELS}[name]
    torch.manual_seed(seed)
    model = factory()
    randomise_batchnorm(model, seed)
    apply_pattern_masks(model, connectivity, seed=seed)
    return model.eval(), shape
