"""Untrained models with the shapes users upload and the engine was never built around: grouped and dilated
convs, odd kernels and paddings, concatenations, several outputs, a transposed conv, squeeze-excitation with a channel
shuffle, attention. For benchmarks/architecture_sweep.py, which checks that the whole pipeline runs on them."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.model_zoo import randomise_batchnorm
from benchmarks.zoo_models import ZOO


def cbr(cin, cout, k=3, s=1, p=1, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 32)
        self.g = cbr(32, 32, groups=4)
        self.b = cbr(32, 64, s=2)
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        return self.fc(self.b(self.g(self.a(x))).mean((2, 3)))


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 24)
        self.d = cbr(24, 24, p=2, dilation=2)
        self.b = cbr(24, 48)
        self.fc = nn.Linear(48, 10)
    def forward(self, x):
        return self.fc(self.b(self.d(self.a(x))).amax((2, 3)))


class OddShapes(nn.Module):
    """1-channel, non-square input, unpadded 3x3, asymmetric padding, 5x5 and 3x1 kernels, biases, no BN."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 20, 3, 1, 0)
        self.c2 = nn.Conv2d(20, 20, 3, 1, (1, 0))
        self.c3 = nn.Conv2d(20, 36, 5, 1, 2)
        self.c4 = nn.Conv2d(36, 36, (3, 1), 1, (1, 0))
        self.c5 = nn.Conv2d(36, 40, 3, 2, 1)
        self.c6 = nn.Conv2d(40, 40, 3, 1, 1, padding_mode="reflect")
        self.fc = nn.Linear(40, 7)
    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.1)
        x = F.gelu(self.c2(x))
        x = F.hardswish(self.c3(x))
        x = torch.sigmoid(self.c4(x)) * x
        x = F.relu(self.c5(x))
        x = F.relu(self.c6(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseCat(nn.Module):
    """Concatenations, an upsample and a dense-prediction (segmentation-like) output."""
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 16)
        self.b = cbr(16, 16)
        self.c = cbr(32, 32, s=2)
        self.d = cbr(32, 32)
        self.head = nn.Conv2d(64, 5, 1)
    def forward(self, x):
        a = self.a(x)
        b = self.b(a)
        c = self.c(torch.cat([a, b], 1))
        d = self.d(c)
        up = F.interpolate(torch.cat([c, d], 1), scale_factor=2.0, mode="nearest")
        return self.head(up)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 16)
        self.b = cbr(16, 32, s=2)
        self.cls = nn.Linear(32, 10)
        self.box = nn.Linear(32, 4)
    def forward(self, x):
        f = self.b(self.a(x)).mean((2, 3))
        return self.cls(f), self.box(f)


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 16, s=2)
        self.b = cbr(16, 16)
        self.up = nn.ConvTranspose2d(16, 8, 2, 2)
        self.out = nn.Conv2d(8, 3, 3, 1, 1)
    def forward(self, x):
        return self.out(F.relu(self.up(self.b(self.a(x)))))


class SEShuffle(nn.Module):
    """Squeeze-excitation, a channel shuffle (view/transpose/reshape) and a BatchNorm1d + dropout head."""
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 32)
        self.b = cbr(32, 32)
        self.se1 = nn.Linear(32, 8)
        self.se2 = nn.Linear(8, 32)
        self.c = cbr(32, 48, s=2)
        self.bn = nn.BatchNorm1d(48)
        self.fc = nn.Linear(48, 10)
        self.drop = nn.Dropout(0.2)
    def forward(self, x):
        x = self.b(self.a(x))
        s = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3))))))
        x = x * s[:, :, None, None]
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = self.c(x)
        return self.fc(self.drop(self.bn(x.flatten(2).mean(2))))


class ConvAttention(nn.Module):
    """A conv stem then one self-attention block over the 8x8 positions (a hybrid ViT in miniature)."""
    def __init__(self):
        super().__init__()
        self.a = cbr(3, 32, s=2)
        self.b = cbr(32, 32, s=2)
        self.norm = nn.LayerNorm(32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc = nn.Linear(32, 10)
    def forward(self, x):
        x = self.b(self.a(x))
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm(t), self.norm(t), self.norm(t), need_weights=False)[0]
        return self.fc(t.mean(1))



# name -> (factory, input shape at batch 1)
UNSEEN = {
    "vgg11_q": (ZOO["vgg11_q"], (1, 3, 32, 32)),
    "mobilenetv2_h": (ZOO["mobilenetv2_h"], (1, 3, 32, 32)),
    "preact_resnet10_silu": (ZOO["preact_resnet10_silu"], (1, 3, 32, 32)),
    "grouped": (Grouped, (1, 3, 32, 32)),
    "dilated": (Dilated, (1, 3, 32, 32)),
    "odd_shapes": (OddShapes, (1, 1, 28, 20)),
    "dense_cat": (DenseCat, (1, 3, 32, 32)),
    "two_outputs": (TwoOutputs, (1, 3, 32, 32)),
    "transposed": (Transposed, (1, 3, 32, 32)),
    "se_shuffle": (SEShuffle, (1, 3, 32, 32)),
    "conv_attention": (ConvAttention, (1, 3, 32, 32)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Seeded random weights, BatchNorm statistics randomised so they are not the identity."""
    factory, shape = UNSEEN[name]
    torch.manual_seed(seed)
    model = factory().eval()
    randomise_batchnorm(model, seed)
    return model, shape
