"""Pointwise tiles (kernels/pointwise_conv.py): 1x1 convs as matrix products, against F.conv2d on odd shapes,
strides, epilogues, output channels not a multiple of a vector; every padded-layout io combination; the tuner
offering them for 1x1 layers only."""
import pytest
import torch

from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.errors import UnsupportedConv
from kernels.format import compact_conv
from kernels.geometry import same_padded
from kernels.isa import runnable_isas
from kernels.pointwise_conv import is_pointwise, pointwise_layer_source
from kernels.spec import ConvSpec, TileConfig
from kernels.tiles import candidate_tiles
from tests.kernels.compiled_models import session_cache
from tests.kernels.test_codegen_vs_conv2d import reference  # the centre-tap 3x3 with padding 1 is the 1x1
from tests.kernels.test_padded_layout import assert_every_padded_io_matches

# (spec, tile): the 1x1 conv is the centre tap of a 3x3 with padding 1, as graph.py compiles it.
LAYERS = [
    (ConvSpec("odd", 13, 37, 9, 11, relu=True, residual=True), TileConfig(3, 4, 0, pixels=True)),
    (ConvSpec("wide", 40, 64, 7, 23, relu=True), TileConfig(4, 6, 0, pixels=True)),
    (ConvSpec("down", 24, 20, 15, 13, stride=2), TileConfig(2, 5, 0, pixels=True)),
    (ConvSpec("plain", 5, 9, 8, 8, residual=True), TileConfig(1, 8, 0, pixels=True)),
    (ConvSpec("one_col", 7, 16, 12, 1), TileConfig(1, 6, 0, pixels=True)),
]


def pointwise_weight(k: int, c: int, seed: int, zero_rows: int = 0) -> torch.Tensor:
    """A 1x1 weight as graph.py hands it over: k x c x 3 x 3, only the centre tap set; some filters all zero."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(k, c, 3, 3)
    w[:, :, 1, 1] = torch.randn(k, c, generator=gen)
    w[:zero_rows] = 0
    return w


@pytest.fixture(scope="module", params=[isa for isa in runnable_isas() if isa != "portable"])
def library(request, tmp_path_factory):
    layers = []
    for seed, (spec, tile) in enumerate(LAYERS):
        weight = pointwise_weight(spec.out_channels, spec.in_channels, seed, zero_rows=seed % 2)
        bias = torch.randn(spec.out_channels, generator=torch.Generator().manual_seed(70 + seed))
        layers.append((spec, weight, bias, tile))
    source = generate_source([(s, compact_conv(w, b, name=s.name), t) for s, w, b, t in layers], request.param)
    return build_library(source, isa=request.param, cache_dir=session_cache(tmp_path_factory)), layers


@pytest.mark.parametrize("batch, threads", [(1, 1), (3, 2)])
def test_pointwise_tiles_match_conv2d(library, batch, threads):
    path, layers = library
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for index, (spec, weight, bias, _) in enumerate(layers):
            gen = torch.Generator().manual_seed(index)
            x = torch.randn(batch, spec.in_channels, spec.height, spec.width, generator=gen)
            residual = torch.randn(batch, spec.out_channels, spec.out_height, spec.out_width, generator=gen) \
                if spec.residual else None
            got = CompiledConv(path, spec)(x, residual)
            torch.testing.assert_close(got, reference(spec, weight, bias, x, residual), rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(previous)


def test_pointwise_padded_layout_every_io_combination(library):
    path, layers = library
    for index, (spec, weight, bias, _) in enumerate(layers):
        if not same_padded(spec):
            continue  # no padded entry (stride 2, maps too small for the layout)
        gen = torch.Generator().manual_seed(index)
        x = torch.randn(2, spec.in_channels, spec.height, spec.width, generator=gen)
        residual = torch.randn(2, spec.out_channels, spec.height, spec.width, generator=gen) if spec.residual else None
        assert_every_padded_io_matches(path, spec, x, residual, CompiledConv(path, spec)(x, residual))


def test_pointwise_only_for_centre_tap_weights():
    spec, tile = LAYERS[0]
    three = torch.randn(spec.out_channels, spec.in_channels, 3, 3)
    compact = compact_conv(three, None, name="three", max_entries=9)
    assert not is_pointwise(compact)
    assert is_pointwise(compact_conv(pointwise_weight(spec.out_channels, spec.in_channels, 0), None, name="pw"))
    with pytest.raises(UnsupportedConv, match="centre"):
        pointwise_layer_source(spec, compact, tile, 16)
    wrong = ConvSpec("p0", spec.in_channels, spec.out_channels, 9, 11, padding=0)
    with pytest.raises(UnsupportedConv, match="1x1"):
        pointwise_layer_source(wrong, compact_conv(pointwise_weight(37, 13, 0), None, name="pw"), tile, 16)


def test_candidates_offer_pointwise_tiles_for_1x1_layers_only():
    spec = ConvSpec("l", 1024, 256, 14, 14)
    assert not any(t.pixels for t in candidate_tiles(spec, "avx512"))
    tiles = candidate_tiles(spec, "avx512", pointwise=True)
    assert [t.label for t in tiles[:2]] == ["f4v6c0p", "f3v8c0p"] and not any(t.pixels for t in tiles[2:])
    assert tiles[2:] == candidate_tiles(spec, "avx512")  # the flat-grid tiles stay candidates after them
    assert [t.label for t in candidate_tiles(spec, "avx2", pointwise=True) if t.pixels] == ["f3v4c0p", "f2v5c0p"]
    assert not any(t.pixels for t in candidate_tiles(spec, "portable", pointwise=True))
    narrow = ConvSpec("n", 64, 16, 7, 7)  # one vector of output channels, maps narrower than a tile
    assert [t.label for t in candidate_tiles(narrow, "avx512", pointwise=True) if t.pixels] == ["f1v6c0p", "f1v7c0p"]
