"""Small pattern-pruned models for the model-level kernel tests (tiny ResNet, VGG-like, a non-pattern net)."""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.model_zoo import apply_pattern_masks
from tests.tiny_models import INPUT_SHAPE, tiny_resnet


def pattern_tiny_resnet(connectivity: float = 0.5, seed: int = 0) -> nn.Module:
    model = tiny_resnet(seed=seed, width=8)
    apply_pattern_masks(model, connectivity, seed=seed)
    return model.eval()


class SmallVGG(nn.Module):
    """conv-BN-ReLU stacks, max-pools, a linear head: the VGG shape in miniature."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _with_bn_statistics(model: nn.Module) -> nn.Module:
    """A few training-mode passes on noise: non-trivial BatchNorm statistics to fold. Returns it in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *INPUT_SHAPE[1:]))
    return model.eval()


def small_vgg(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = _with_bn_statistics(SmallVGG())
    apply_pattern_masks(model, 0.25, seed=seed)
    return model


class MixedNet(nn.Module):
    """One pattern-sparse conv, one randomly (unstructured) sparse conv, one grouped conv."""

    def __init__(self):
        super().__init__()
        self.pattern = nn.Conv2d(3 * 4, 8, 3, padding=1)
        self.unstructured = nn.Conv2d(8, 16, 3, padding=1)  # 128 kernels: ~110 distinct patterns, > MAX_PATTERNS
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=2)

    def forward(self, x):
        x = torch.cat([x] * 4, 1)
        return self.grouped(torch.relu(self.unstructured(torch.relu(self.pattern(x)))))


def mixed_net(seed: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    model = MixedNet().eval()
    apply_pattern_masks(model, 0.0, seed=seed)
    with torch.no_grad():  # half the weights zeroed at random: ~110 distinct patterns
        w = model.unstructured.weight
        w.copy_(torch.randn_like(w) * 0.1 * (torch.rand_like(w) > 0.5).float())
    return model


def example(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(seed))


def assert_close(result: torch.Tensor, reference: torch.Tensor, rel: float = 1e-4) -> None:
    scale = float(reference.abs().max())
    assert float((result - reference).abs().max()) <= rel * max(scale, 1e-6)


def session_cache(tmp_path_factory):
    """One kernel build cache per test session, shared by the test modules (same source, same build)."""
    path = tmp_path_factory.getbasetemp() / "zd_kernel_cache"
    path.mkdir(exist_ok=True)
    return path


class TwoConvBlock(nn.Module):
    """One residual block on 8 channels: the smallest model with both epilogues, quick to tune."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = torch.cat([x, x, x[:, :2]], 1)
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


def two_conv_block(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = TwoConvBlock().eval()
    apply_pattern_masks(model, 0.5, seed=seed)
    return model


class Bottleneck(nn.Module):
    """Two ResNet-50-style blocks (1x1, 3x3, 1x1, then the shortcut add + ReLU): the first with a 1x1 projection
    shortcut, the second with the identity; plus two 3x3 branches summed, which only one may fuse."""

    def __init__(self):
        super().__init__()
        def block(cin, mid, cout):
            return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                 nn.Conv2d(mid, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
                                 nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout))
        self.block1, self.block2 = block(3, 4, 16), block(16, 4, 16)
        self.project = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16))
        self.left, self.right = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.block1(x) + self.project(x))
        x = torch.relu(self.block2(x) + x)
        return torch.relu(self.left(x) + self.right(x))


def bottleneck(seed: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    model = _with_bn_statistics(Bottleneck())
    apply_pattern_masks(model, 0.5, seed=seed)
    return model
