"""Pixels tiles (kernels/pixel_conv.py) against F.conv2d (+ ReLU) (+ max_pool2d), on every ISA this machine runs;
the fused conv + pool in a loaded model (kernels/stem_pool.py)."""
import ctypes
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv, load_library
from kernels.errors import KernelRuntimeError, UnsupportedConv
from kernels.format import compact_conv
from kernels.geometry import padded_lead, padded_layout_len
from kernels.isa import VECTOR_WIDTH, runnable_isas
from kernels.padded_layout import from_padded
from kernels.spec import ConvSpec, TileConfig
from kernels.stem_pool import CompiledConvPool
from kernels.tiles import candidate_tiles
from tests.kernels.compiled_models import assert_close, session_cache


def _random_layers(count: int = 14, seed: int = 0):
    """C_in 1-4, kernel 3/5/7, stride 1/2, padding 0-3, odd sizes, a dilated one, channel counts that leave part
    of a vector or of a group empty; tiles from 1 to 4 channel vectors and 1 to 8 positions."""
    rng = random.Random(seed)
    layers = []
    for index in range(count):
        k = rng.choice((3, 5, 7))
        c, s, d = rng.randint(1, 4), rng.choice((1, 2)), 2 if index == 3 else 1
        p = rng.randint(0, min(3, (k - 1) * d))
        h, w = rng.randint((k - 1) * d + 1, 23) | 1, rng.randint((k - 1) * d + 1, 29)
        out = rng.choice((16, 24, 40, 64, 72))
        tile = TileConfig(filters=rng.choice((1, 2, 3, 4)), vectors=rng.randint(1, 8), channels=0, pixels=True)
        spec = ConvSpec(f"px{index}", c, out, h, w, stride=s, padding=p, dilation=d, relu=index % 3 != 0,
                        kernel_size=k)
        gen = torch.Generator().manual_seed(index)
        weight, bias = torch.randn(out, c, k, k, generator=gen), torch.randn(out, generator=gen)
        weight[0] = 0  # an empty filter, still stored and computed
        layers.append((spec, weight, bias, tile))
    return layers


LAYERS = _random_layers()


@pytest.fixture(scope="module", params=runnable_isas())
def library(request, tmp_path_factory):
    isa = request.param
    source = generate_source([(s, compact_conv(w, b, name=s.name, max_entries=s.kernel_size ** 2), t)
                              for s, w, b, t in LAYERS], isa)
    return isa, build_library(source, isa=isa, cache_dir=session_cache(tmp_path_factory))


def _reference(spec, weight, bias, x):
    y = F.conv2d(x, weight, bias, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    return torch.relu(y) if spec.relu else y


@pytest.mark.parametrize("batch, threads", [(1, 1), (3, 2)])
def test_pixel_tiles_match_conv2d(library, batch, threads):
    isa, path = library
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for index, (spec, weight, bias, tile) in enumerate(LAYERS):
            x = torch.randn(batch, spec.in_channels, spec.height, spec.width,
                            generator=torch.Generator().manual_seed(50 + index))
            torch.testing.assert_close(CompiledConv(path, spec)(x), _reference(spec, weight, bias, x), rtol=1e-4,
                                       atol=1e-4, msg=f"{isa} {spec} {tile.label}")
    finally:
        torch.set_num_threads(previous)


def _fused(path, spec):
    fn = getattr(load_library(path), spec.symbol + "_pool")
    fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 8
    return fn


@pytest.mark.parametrize("pool", [(3, 2, 1, 0), (3, 2, 1, 1), (2, 2, 0, 0), (3, 1, 1, 1), (5, 3, 2, 0)])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_pool_matches_conv_then_pool(library, pool, padded):
    isa, path = library
    k, s, p, relu = pool
    for index, (spec, weight, bias, tile) in enumerate(LAYERS):
        if spec.out_height + 2 * p < k or spec.out_width + 2 * p < k:
            continue
        for batch, threads in ((1, 1), (3, 2)):
            x = torch.randn(batch, spec.in_channels, spec.height, spec.width,
                            generator=torch.Generator().manual_seed(90 + index))
            conv = _reference(spec, weight, bias, x)
            expected = F.max_pool2d(torch.relu(conv) if relu else conv, k, s, p)
            ho, wo = expected.shape[2:]
            length, lead = (padded_layout_len(ho, wo), padded_lead(wo)) if padded else (0, 0)
            y = torch.full((batch, spec.out_channels, length) if padded else expected.shape, float("nan"))
            _fused(path, spec)(x.data_ptr(), y.data_ptr(), batch, threads, k, s, p, relu, length, lead)
            msg = f"{isa} {spec} {tile.label} pool {pool} batch {batch}"
            if padded:
                # Everything from the lead on is written: the zero border and slack, then the interior.
                assert not torch.isnan(y[:, :, lead:]).any(), msg
                plane = y[:, :, lead:lead + (ho + 2) * (wo + 2)].unflatten(2, (ho + 2, wo + 2))
                assert plane[:, :, 0].eq(0).all() and plane[:, :, :, 0].eq(0).all() and plane[:, :, -1].eq(0).all()
                assert y[:, :, lead + (ho + 2) * (wo + 2):].eq(0).all(), msg
                y = from_padded(y, ho, wo)
            torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4, msg=msg)


def test_pixel_candidates_only_for_few_input_channels():
    stem = ConvSpec("stem", 3, 64, 224, 224, stride=2, padding=3, relu=True, kernel_size=7)
    assert [t.label for t in candidate_tiles(stem, "avx512")][0] == "f4v6c0p"
    assert [t.label for t in candidate_tiles(stem, "avx2")][0] == "f2v5c0p"
    assert not any(t.pixels for t in candidate_tiles(stem, "portable"))
    cifar_stem = ConvSpec("c", 3, 16, 32, 32, relu=True)  # one vector of 16 filters: a broadcast per FMA
    wide_in = ConvSpec("w", 8, 64, 32, 32)
    residual = ConvSpec("r", 3, 64, 32, 32, residual=True)
    for spec in (cifar_stem, wide_in, residual):
        assert not any(t.pixels for t in candidate_tiles(spec, "avx512")), spec
    assert any(t.pixels for t in candidate_tiles(ConvSpec("v", 3, 64, 32, 32, relu=True), "avx512"))
    assert candidate_tiles(ConvSpec("n", 4, 32, 9, 5, kernel_size=5, padding=2), "avx512")[0] == \
        TileConfig(2, 5, 0, pixels=True)  # as many channel vectors and positions as the layer has


def test_pixel_tile_config_and_unsupported_layers():
    assert TileConfig(4, 6, 0, pixels=True).label == "f4v6c0p"
    for bad in ({"direct": True}, {"channels": 8}):
        with pytest.raises(UnsupportedConv, match="pixels"):
            TileConfig(4, 6, pixels=True, **({"channels": 0} | bad))
    for spec in (ConvSpec("wide", 5, 32, 9, 9), ConvSpec("res", 3, 32, 9, 9, residual=True)):
        weight = torch.randn(32, spec.in_channels, 3, 3)
        with pytest.raises(UnsupportedConv, match="input channels|residual"):
            generate_source([(spec, compact_conv(weight, torch.zeros(32), name=spec.name), TileConfig(
                2, 4, 0, pixels=True))], "avx2")


class MiniResNetStem(nn.Module):
    """ResNet-18's stem and first block in miniature: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, a basic block."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.a, self.b = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = torch.relu(self.b(torch.relu(self.a(x))) + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from benchmarks.model_zoo import apply_pattern_masks
    torch.manual_seed(0)
    model = MiniResNetStem()
    with torch.no_grad():
        model.bn1.running_mean.normal_()
        model.bn1.running_var.uniform_(0.5, 2)
    model.eval()
    apply_pattern_masks(model, 0.5, seed=0)
    package = tmp_path_factory.mktemp("stem_pool") / "pkg"
    manifest = kernels.compile_model(model, torch.randn(1, 3, 45, 39), package, tune=False,
                                     cache_dir=session_cache(tmp_path_factory))
    return model, package, manifest


def test_loaded_resnet_stem_runs_conv_and_pool_in_one_call(mini):
    model, package, manifest = mini
    stem = next(layer for layer in manifest["layers"] if layer["name"] == "conv1")
    lanes = VECTOR_WIDTH[manifest["isa"]]
    if manifest["isa"] == "portable" or 32 < 2 * lanes:
        pytest.skip("no pixels tile for a 32-filter stem on this ISA")
    assert stem["kernel"] == "sparse" and stem["tile"]["pixels"]
    compiled, separate = kernels.load(package), kernels.load(package, conv_pool=False)
    fused = [m for m in compiled.modules() if isinstance(m, CompiledConvPool)]
    assert len(fused) == 1 and fused[0].padded_map == (12, 10)  # hands the block its padded layout
    assert not any(isinstance(m, CompiledConvPool) for m in separate.modules())
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 45, 39)
            expected = model(x)
            assert_close(compiled(x), expected)
            assert_close(separate(x), expected)


def test_fused_module_falls_back_to_two_calls(mini):
    model, package, _ = mini
    compiled = kernels.load(package)
    fused = [m for m in compiled.modules() if isinstance(m, CompiledConvPool)]
    if not fused:
        pytest.skip("no fused stem on this ISA")
    module = fused[0]
    x = torch.randn(2, 3, 45, 39)
    with torch.no_grad():
        reference = F.max_pool2d(torch.relu(model.bn1(model.conv1(x))), 3, 2, 1)
        strided = torch.randn(2, 3, 45, 78)[..., ::2]  # not contiguous: the fused call copies it
        assert_close(from_padded(module(x), 12, 10), reference)
        assert_close(from_padded(module(strided), 12, 10),
                     F.max_pool2d(torch.relu(model.bn1(model.conv1(strided))), 3, 2, 1))
        module.padded_map = None
        assert_close(module(x), reference)
        wrong = torch.randn(1, 3, 44, 39)  # a shape the library was not built for: the two calls refuse it too
        with pytest.raises(KernelRuntimeError):
            module(wrong)
