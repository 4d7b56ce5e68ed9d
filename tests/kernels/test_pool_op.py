"""The library's max-pool: equal to F.max_pool2d (of a ReLU when fused), and swapped into loaded graphs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from benchmarks.model_zoo import apply_pattern_masks
from kernels.pool_op import CompiledMaxPool
from tests.kernels.compiled_models import assert_close, session_cache


class StemNet(nn.Module):
    """A dense 4x4 stem (stays torch: 5x5 / 7x7 would be compiled with the ReLU fused), ReLU, 3x3/2 max-pool
    (the ResNet stem in miniature), then a pattern 3x3 conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=2, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
        return F.max_pool2d(self.body(x), 2)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    torch.manual_seed(0)
    model = StemNet().eval()
    apply_pattern_masks(model, 0.5, seed=0)
    package = tmp_path_factory.mktemp("pool") / "pkg"
    kernels.compile_model(model, torch.randn(1, 3, 20, 18), package, tune=False,
                          cache_dir=session_cache(tmp_path_factory))
    return model, kernels.load(package)


def test_pools_in_the_loaded_graph_are_compiled_and_the_stem_relu_is_fused(loaded):
    model, compiled = loaded
    pools = [m for m in compiled.modules() if isinstance(m, CompiledMaxPool)]
    assert sorted((p.kernel, p.stride, p.padding, p.relu) for p in pools) == [(2, 2, 0, False), (3, 2, 1, True)]
    assert not any("relu" in str(n.target) for n in compiled.graph.graph.nodes if n.op == "call_function")
    with torch.no_grad():
        for shape in ((1, 3, 20, 18), (3, 3, 20, 18)):
            x = torch.randn(shape)
            assert_close(compiled(x), model(x))


@pytest.mark.parametrize("kernel,stride,padding,relu", [(3, 2, 1, True), (3, 2, 1, False), (2, 2, 0, False),
                                                         (3, 1, 1, True), (5, 3, 2, False), (3, 2, 0, False)])
def test_compiled_pool_equals_torch(loaded, kernel, stride, padding, relu):
    fn = next(m for m in loaded[1].modules() if isinstance(m, CompiledMaxPool))._fn
    pool = CompiledMaxPool(fn, kernel, stride, padding, relu)
    for shape in ((2, 3, 11, 9), (1, 1, 5, 5), (1, 4, 1 + 2 * padding + kernel, kernel), (1, 2, 5, 75)):
        if shape[2] + 2 * padding < kernel or shape[3] + 2 * padding < kernel:
            continue
        x = torch.randn(shape)
        x[0, 0, 0, 0] = float("-inf")
        reference = F.max_pool2d(torch.relu(x) if relu else x, kernel, stride, padding)
        assert torch.equal(pool(x), reference)
        assert torch.equal(pool(x.transpose(2, 3).contiguous().transpose(2, 3)), reference)  # strided input
