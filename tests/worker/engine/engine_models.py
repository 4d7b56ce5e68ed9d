"""Small models for the engine tests beyond tests.tiny_models: one without BatchNorm, one without 3x3 convs, two with
depthwise convs."""
import torch
from torch import nn


class NoBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class NoConv3x3(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Depthwise(nn.Module):
    """Stem, a depthwise 3x3, then a dense `mixer` x `mixer` conv."""
    mixer = 3

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, self.mixer, padding=self.mixer // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn1(self.dw(x)))
        x = torch.relu(self.bn2(self.conv(x)))
        return self.head(x.mean((2, 3)))


def seeded(cls, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


class TwoConvs(nn.Module):
    """conv-BN twice (3 -> 8 -> 8 channels); subclasses add a head and the forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)


class SegmentationWithAuxHead(TwoConvs):
    """Two outputs: a per-pixel class map (N, 4, H, W) and an auxiliary (N, 2) head."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Conv2d(8, 4, 1)
        self.aux = nn.Linear(8, 2)

    def forward(self, x):
        features = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.classifier(features), self.aux(features.mean((2, 3)))


def half_masked_student(seed: int):
    """(teacher, student, mask): a tiny ResNet and a copy with half of layer1.conv1's weights zeroed by `mask`."""
    import copy

    from tests.tiny_models import tiny_resnet

    teacher = tiny_resnet()
    student = copy.deepcopy(teacher)
    mask = torch.rand(student.layer1.conv1.weight.shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    with torch.no_grad():
        student.layer1.conv1.weight.mul_(mask)
    return teacher, student, mask


class DepthwiseOnly(Depthwise):
    """A MobileNet in miniature: besides the stem, depthwise 3x3 and 1x1 convs only (no dense 3x3 to prune)."""
    mixer = 1


class ChannelShuffle(TwoConvs):
    """A channel shuffle, `x.view(n, groups, c // groups, h, w)`: traced at a fixed batch, its view target bakes the
    batch size in (torch.export without dynamic_shapes, torch.jit.trace)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(torch.relu(self.bn2(self.conv2(x))).mean((2, 3)))


class BatchFoldedAttention(nn.Module):
    """Self-attention over positions: traced at a fixed batch, the heads' view folds the batch into a middle size
    ([positions, batch * heads, head_dim]), which no rewrite can make follow another batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        t = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)
        return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))
