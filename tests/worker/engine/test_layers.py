import torch
from torch import nn

from worker.engine.layers import execution_order


class FreesConvOutputEarly(nn.Module):
    """The conv's output is freed before the BatchNorm's input is made, so Python may give the new tensor the
    freed one's id (an imported ONNX graph frees values as soon as it can)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        out = self.conv(x)
        pooled = out.mean((2, 3))
        del out
        return self.head(self.bn(x * 2).mean((2, 3)) + pooled)


def test_a_batchnorm_is_paired_only_with_the_conv_that_feeds_it():
    for _ in range(5):  # the id reuse that paired them wrongly was not random, but allocator dependent
        layers = execution_order(FreesConvOutputEarly().eval(), torch.zeros(2, 8, 8, 8))
        assert layers[0].name == "conv" and layers[0].bn_name is None


def test_a_conv_followed_by_its_batchnorm_is_paired():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)).eval()
    assert [(l.name, l.bn_name) for l in execution_order(model, torch.zeros(2, 3, 8, 8))] == [("0", "1"), ("3", None)]
