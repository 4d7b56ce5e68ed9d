"""The padded activation layout between compiled layers: every io combination against F.conv2d, the chaining
of a loaded graph (which edges switch, which must stay NCHW) and whole models bit-identical to NCHW hand-over."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from benchmarks.model_zoo import apply_pattern_masks
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.errors import KernelRuntimeError
from kernels.format import compact_conv
from kernels.geometry import padded_layout_len, padded_lead, same_padded
from kernels.graph_ops import BatchDispatch, CompiledLayer
from kernels.isa import runnable_isas
from kernels.padded_layout import (IN_PADDED, OUT_PADDED, RES_PADDED, PaddedLayoutConv, chain_padded_layouts,
                                   from_padded, to_padded)
from kernels.pool_op import CompiledMaxPool
from kernels.spec import ConvSpec, TileConfig
from tests.kernels.compiled_models import example, pattern_tiny_resnet, session_cache, small_vgg
from tests.kernels.test_format import LIB8, pattern_pruned

# Odd maps (row width W + 2 not a multiple of a vector, interior never 64-byte aligned without the lead),
# chunked and direct tiles, a 1-row map, residual and ReLU epilogues; all large enough for the layout.
LAYERS = [
    (ConvSpec("odd", 8, 12, 25, 23, relu=True, residual=True), TileConfig(2, 3, 4)),
    (ConvSpec("chunked", 32, 24, 24, 24, relu=True, residual=True), TileConfig(4, 2, 5, direct=True)),
    (ConvSpec("wide", 4, 6, 23, 31, residual=True), TileConfig(2, 4, 0)),
    (ConvSpec("one_row", 3, 4, 1, 216), TileConfig(1, 2, 0)),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return session_cache(tmp_path_factory)


@pytest.fixture(scope="module", params=runnable_isas())
def library(request, cache):
    layers = []
    for seed, (spec, tile) in enumerate(LAYERS):
        weight = pattern_pruned(spec.out_channels, spec.in_channels, LIB8, connectivity=0.4, seed=seed)
        bias = torch.randn(spec.out_channels, generator=torch.Generator().manual_seed(50 + seed))
        layers.append((spec, weight, bias, tile))
    source = generate_source([(s, compact_conv(w, b, name=s.name), t) for s, w, b, t in layers], request.param)
    return build_library(source, isa=request.param, cache_dir=cache), layers


def _garbage_padded(x: torch.Tensor) -> torch.Tensor:
    """The padded layout with NaN in the lead and the slack: the kernels must never read them for a kept output."""
    p = to_padded(x)
    h, w = x.shape[2:]
    p[:, :, :padded_lead(w)] = float("nan")
    p[:, :, padded_lead(w) + (h + 2) * (w + 2):] = float("nan")
    return p


def test_tiny_maps_keep_their_own_planes():
    assert all(same_padded(ConvSpec("l", 4, 4, s, s)) for s in (7, 8, 14, 16, 56))
    assert not same_padded(ConvSpec("l", 4, 4, 4, 4)) and not same_padded(ConvSpec("l", 4, 4, 6, 6))
    assert not same_padded(ConvSpec("l", 4, 4, 24, 24, stride=2))


def test_layout_round_trips_and_is_sized_by_the_map():
    x = torch.randn(2, 3, 5, 7)
    p = to_padded(x)
    assert p.shape == (2, 3, padded_layout_len(5, 7)) and (padded_lead(7) + 7 + 3) % 16 == 0
    assert torch.equal(from_padded(p, 5, 7), x)
    assert float(p.abs().sum()) == pytest.approx(float(x.abs().sum()))  # zeros everywhere else


@pytest.mark.parametrize("batch, threads", [(1, 1), (2, 2)])
def test_every_io_combination_matches_conv2d(library, batch, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_every_io_combination(*library, batch)
    finally:
        torch.set_num_threads(previous)


def _check_every_io_combination(path, layers, batch):
    for index, (spec, weight, bias, _) in enumerate(layers):
        gen = torch.Generator().manual_seed(index)
        x = torch.randn(batch, spec.in_channels, spec.height, spec.width, generator=gen)
        residual = torch.randn(batch, spec.out_channels, spec.height, spec.width, generator=gen) \
            if spec.residual else None
        expected = F.conv2d(x, weight, bias, padding=1) + (residual if residual is not None else 0)
        expected = torch.relu(expected) if spec.relu else expected
        nchw = CompiledConv(path, spec)(x, residual)
        torch.testing.assert_close(nchw, expected, rtol=1e-4, atol=1e-4)
        assert_every_padded_io_matches(path, spec, x, residual, nchw)


def assert_every_padded_io_matches(path, spec: ConvSpec, x, residual, nchw) -> None:
    """Every io combination of the layer's padded entry gives the NCHW call's result, bit for bit (same arithmetic)."""
    for io in range(1, 8):
        if io & RES_PADDED and residual is None:
            continue
        conv = PaddedLayoutConv(CompiledConv(path, spec), io)
        got = conv(_garbage_padded(x) if io & IN_PADDED else x,
                   None if residual is None else _garbage_padded(residual) if io & RES_PADDED else residual)
        if io & OUT_PADDED:  # the whole plane: the NCHW result inside, zeros in the padding
            assert got.shape == (x.shape[0], spec.out_channels, padded_layout_len(spec.height, spec.width))
            lead, size = padded_lead(spec.width), (spec.height + 2) * (spec.width + 2)
            assert torch.equal(got[:, :, lead:lead + size], to_padded(nchw)[:, :, lead:lead + size]), \
                (spec.name, io)
            got = from_padded(got, spec.height, spec.width)
        assert torch.equal(got, nchw), (spec.name, io)


def test_padded_call_checks_its_layout(library):
    path, layers = library
    spec = layers[1][0]
    conv = PaddedLayoutConv(CompiledConv(path, spec), IN_PADDED | RES_PADDED)
    x = torch.randn(1, spec.in_channels, spec.height, spec.width)
    with pytest.raises(KernelRuntimeError, match="padded layout"):
        conv(x, to_padded(torch.randn(1, spec.out_channels, spec.height, spec.width)))  # NCHW where padded is due
    with pytest.raises(KernelRuntimeError, match="residual"):
        conv(to_padded(x))
    with pytest.raises(KernelRuntimeError, match="no padded layout"):
        PaddedLayoutConv(CompiledConv(path, spec), 0)


# Inputs large enough for two stride-2 steps above the 7x7 the padded layout needs.
BIG = (3, 32, 32)


class Branchy(nn.Module):
    """a -> b chains; b also feeds a torch op and a stride-2 conv (NCHW); the stride-2 conv's output feeds d."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.d = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        yb = torch.relu(self.b(torch.relu(self.a(x))))
        return torch.cat([self.d(self.c(yb)).flatten(1), yb.mean((2, 3))], 1)


def branchy() -> nn.Module:
    torch.manual_seed(3)
    model = Branchy().eval()
    apply_pattern_masks(model, 0.3, seed=3)
    return model


class Pooled(nn.Module):
    """A ResNet stem in miniature: conv -> ReLU -> max-pool (library) -> a block whose residual is the pool."""

    def __init__(self):
        super().__init__()
        self.stem, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
            nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        p = nn.functional.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
        return torch.relu(self.c(torch.relu(self.b(p))) + p)


def pooled() -> nn.Module:
    torch.manual_seed(4)
    model = Pooled().eval()
    apply_pattern_masks(model, 0.3, seed=4)
    return model


def big_example(batch: int = 1, seed: int = 0, shape=BIG) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _io_bits(compiled) -> dict[str, int]:
    gm = compiled.graph
    bits = {}
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, CompiledLayer):
            bits[module.layer] = module.kernel.io if isinstance(module.kernel, PaddedLayoutConv) else 0
    return bits


@pytest.mark.parametrize("factory, shape, expected", [
    # stem -> layer1.conv1 (input) and layer1.conv2 (residual); layer1.conv2 feeds stride-2 readers: NCHW;
    # layer2.conv2 reads a stride-2 conv and a 1x1 shortcut, both NCHW
    (pattern_tiny_resnet, BIG, {"conv1": OUT_PADDED, "layer1.conv1": IN_PADDED | OUT_PADDED,
                                "layer1.conv2": IN_PADDED | RES_PADDED, "layer2.conv1": 0, "layer2.shortcut.0": 0,
                                "layer2.conv2": 0}),
    (branchy, BIG, {"a": OUT_PADDED, "b": IN_PADDED, "c": 0, "d": 0}),
    # the max-pool writes the padded layout for b (input) and c (residual)
    (pooled, (3, 48, 48), {"stem": 0, "b": IN_PADDED | OUT_PADDED, "c": IN_PADDED | RES_PADDED}),
    # features.3 feeds a max-pool (NCHW); the max-pool writes the padded layout for features.7 (8x8)
    (small_vgg, example().shape[1:], {"features.0": OUT_PADDED, "features.3": IN_PADDED, "features.7": IN_PADDED}),
], ids=["tiny_resnet", "branchy", "pooled", "small_vgg"])
def test_models_chain_the_expected_edges_and_stay_bit_identical(factory, shape, expected, tmp_path, cache):
    model = factory()
    kernels.compile_model(model, big_example(shape=shape), tmp_path / "pkg", tune=False, cache_dir=cache)
    # layer calls (segments=False): the io bits are read off each layer's module
    chained = kernels.load(tmp_path / "pkg", segments=False)
    plain = kernels.load(tmp_path / "pkg", padded_layout=False, segments=False)
    assert _io_bits(chained) == expected
    assert not any(_io_bits(plain).values())
    pools = [m for m in chained.graph.modules() if isinstance(m, CompiledMaxPool)]
    assert all(p.padded_map is None for p in pools) != (factory in (pooled, small_vgg))
    with torch.no_grad():
        for batch in (1, 2):
            x = big_example(batch, seed=batch, shape=shape)
            got = chained(x)
            assert torch.equal(got, plain(x))
            torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)


def test_batch_dispatched_layers_keep_nchw_on_both_sides(tmp_path, cache):
    model = pattern_tiny_resnet()
    kernels.compile_model(model, big_example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    compiled = kernels.load(tmp_path / "pkg", padded_layout=False, segments=False)
    layer = next(m for m in compiled.graph.modules() if isinstance(m, CompiledLayer) and m.layer == "layer1.conv1")
    layer.kernel = BatchDispatch(layer.kernel, layer.kernel, 2)  # runs NCHW (dense at batch >= 2 in a package)
    assert chain_padded_layouts(compiled.graph) == 0  # its producer, itself and its reader all stay NCHW
    with torch.no_grad():
        x = big_example(2, seed=5)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_library_with_another_layout_length_stays_nchw(library, monkeypatch):
    path, layers = library
    spec = layers[0][0]
    import kernels.padded_layout as padded_layout
    assert padded_layout.has_padded_entry(CompiledConv(path, spec))
    # The library says padded_layout_len(5, 7); code computing another length must not hand it that layout.
    monkeypatch.setattr(padded_layout, "padded_layout_len", lambda h, w: padded_layout_len(h, w) + 16)
    assert not padded_layout.has_padded_entry(CompiledConv(path, spec))
