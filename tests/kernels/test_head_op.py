"""The library's classifier head: equal to pool -> flatten -> linear in torch, torch for what it cannot read, and
swapped into loaded graphs (and only where the chain is the head's alone)."""
import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from benchmarks.model_zoo import apply_pattern_masks
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import load_library
from kernels.head_op import CompiledHead, install_head_layers
from kernels.isa import runnable_isas
from tests.kernels.compiled_models import assert_close, session_cache


@pytest.fixture(scope="module", params=runnable_isas())
def library(request, tmp_path_factory):
    """A library of the prelude alone (no layers): it carries the head like every generated library."""
    return build_library(generate_source([], request.param), isa=request.param,
                         cache_dir=session_cache(tmp_path_factory))


def _fn(library):
    fn = load_library(library).zd_classifier_head
    fn.restype, fn.argtypes = None, [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5
    return fn


def _reference(x, weight, bias, pool):
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1) if pool else x, 1), weight, bias)


def _assert_float32_close(got, x, weight, bias, pool):
    """Within float32 rounding of the float64 result: the bound scales with the sum of the terms' magnitudes, not
    with the output (one output of 512 cancelling terms can be near zero)."""
    double = lambda t: None if t is None else t.double()  # noqa: E731
    exact = _reference(x.double(), weight.double(), double(bias), pool)
    pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1) if pool else x, 1).double().abs()
    terms = F.linear(pooled, weight.double().abs(), None if bias is None else bias.double().abs())
    assert got.dtype == torch.float32 and got.shape == exact.shape
    assert bool(((got.double() - exact).abs() <= 1e-6 * (terms + 1) * (pooled.shape[1] + 16) ** 0.5).all())


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_head_equals_torch(library, threads):
    fn, generator = _fn(library), torch.Generator().manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in (1, 3):
            for channels in (1, 7, 512):
                for spatial in ((1, 1), (7, 7), (5, 3)):
                    for out in (1, 10, 1000):
                        for bias in (True, False):
                            for pool in (True, False):
                                x = torch.randn(batch, channels, *spatial, generator=generator)
                                features = channels if pool else x[0].numel()
                                weight = torch.randn(out, features, generator=generator)
                                b = torch.randn(out, generator=generator) if bias else None
                                head = CompiledHead(fn, weight, b, pool)
                                _assert_float32_close(head(x), x, weight, b, pool)
    finally:
        torch.set_num_threads(previous)


def test_strided_input_is_read_as_nchw(library):
    x = torch.randn(2, 16, 5, 3).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(10, 16), torch.randn(10)
    _assert_float32_close(CompiledHead(_fn(library), weight, bias, True)(x), x, weight, bias, True)


def test_inputs_the_library_cannot_read_run_the_torch_ops(library):
    fn = _fn(library)
    weight, bias = torch.randn(10, 16), torch.randn(10)
    x64 = torch.randn(2, 16, 4, 4, dtype=torch.float64)  # float64: torch's result, in float64
    out = CompiledHead(fn, weight.double(), bias.double(), True)(x64)
    assert out.dtype == torch.float64 and torch.equal(out, _reference(x64, weight.double(), bias.double(), True))
    x3 = torch.randn(5, 4, 4)  # (C, H, W): pooled to (5, 1, 1), flattened to (5, 1)
    w1 = torch.randn(10, 1)
    assert torch.equal(CompiledHead(fn, w1, bias, True)(x3), _reference(x3, w1, bias, True))
    with pytest.raises(RuntimeError):  # 8 channels for 16 in-features: torch's own error
        CompiledHead(fn, weight, bias, True)(torch.randn(1, 8, 4, 4))


class Heads(nn.Module):
    """Every head shape the installer looks for, a pool it must leave to torch, and a linear it must."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 5), nn.Linear(8, 4, bias=False), nn.Linear(8 * 3 * 2, 3)
        self.shared, self.plain = nn.Linear(8, 2), nn.Linear(2, 2)

    def forward(self, x):
        a = self.a(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        b = self.b(torch.flatten(x.mean((-1, -2), keepdim=True), 1))
        c = self.c(torch.flatten(x, 1))  # no pool (a VGG head): a linear over C*H*W
        pooled = F.adaptive_avg_pool2d(x, (1, 1))  # read twice: stays torch, its flatten -> linear does not
        shared = self.shared(torch.flatten(pooled, 1)) + pooled.sum()
        return a, b, c, shared, self.plain(shared)  # no flatten: stays torch


def test_installer_takes_the_head_chains_only(library):
    torch.manual_seed(0)
    model, x = Heads().eval(), torch.randn(2, 8, 3, 2)
    gm = torch.export.export(model, (x,)).module()
    assert install_head_layers(gm, library) == 4
    heads = [m for m in gm.modules() if isinstance(m, CompiledHead)]
    assert sorted((h.in_features, h.out_features, h.pool, h.bias is not None) for h in heads) == \
        [(8, 2, False, True), (8, 4, True, False), (8, 5, True, True), (48, 3, False, True)]
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert sum("linear" in t for t in targets) == 1 and sum("adaptive_avg_pool2d" in t for t in targets) == 1
    with torch.no_grad():
        for got, want in zip(gm(x), model(x)):
            assert_close(got, want, rel=1e-5)


class HeadNet(nn.Module):
    """A pattern 3x3 conv, ReLU, global average pool, linear: the ResNet tail in miniature."""

    def __init__(self, mean: bool):
        super().__init__()
        self.mean = mean
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x.mean((2, 3), keepdim=True) if self.mean else F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("mean", [False, True], ids=["adaptive_avg_pool2d", "mean"])
def test_whole_model_with_the_compiled_head_matches_dense(tmp_path_factory, mean):
    torch.manual_seed(0)
    model = HeadNet(mean).eval()
    apply_pattern_masks(model, 0.5, seed=0)
    package = tmp_path_factory.mktemp("head") / "pkg"
    kernels.compile_model(model, torch.randn(1, 3, 12, 10), package, tune=False,
                          cache_dir=session_cache(tmp_path_factory))
    compiled, torch_head = kernels.load(package), kernels.load(package, head=False)
    assert [type(m) for m in compiled.modules() if isinstance(m, CompiledHead)] == [CompiledHead]
    assert not [n for n in compiled.graph.graph.nodes if n.op == "call_function"]  # conv and head: library calls
    assert not any(isinstance(m, CompiledHead) for m in torch_head.modules())
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 12, 10)
            assert_close(compiled(x), model(x))
            assert_close(compiled(x), torch_head(x), rel=1e-5)
