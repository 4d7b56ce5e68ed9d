"""Every generated kernel against F.conv2d (+bias, +residual, +ReLU), on every ISA this machine runs.

One library per ISA holds all layers, so the whole file compiles three times at most.
"""
import ctypes
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from kernels import build
from kernels.build import build_library
from kernels.codegen import generate_source
from kernels.conv_op import CompiledConv
from kernels.errors import KernelRuntimeError, UnsupportedConv
from kernels.format import compact_conv
from kernels.isa import runnable_isas
from kernels.spec import ConvSpec, TileConfig
from kernels.tiles import candidate_tiles
from tests.kernels.test_format import LIB8, pattern_pruned

ODD_LIB = [(0,), (8,), (0, 1, 2, 3, 4, 5, 6, 7, 8), (2, 6), (1, 3, 5, 7)]

# name, C, K, H, W, stride, padding, dilation, relu, residual, library, connectivity, tile
CASES = [
    ("basic", 8, 12, 5, 7, 1, 1, 1, True, True, LIB8, 0.5, TileConfig(2, 3, 4)),
    ("stride2", 16, 8, 9, 9, 2, 1, 1, False, False, LIB8, 0.3, TileConfig(4, 2, 0)),
    ("map1x1", 4, 5, 1, 1, 1, 1, 1, True, False, LIB8, 0.0, TileConfig(4, 1, 0)),
    ("pad0", 8, 8, 6, 5, 1, 0, 1, False, True, LIB8, 0.5, TileConfig(1, 5, 3)),
    ("s2pad0", 7, 9, 11, 6, 2, 0, 1, True, True, LIB8, 0.5, TileConfig(8, 1, 2)),
    ("dilated", 6, 6, 8, 8, 1, 2, 2, False, False, LIB8, 0.0, TileConfig(2, 2, 0)),
    ("pruned_filters", 8, 7, 6, 6, 1, 1, 1, True, False, LIB8, 0.2, TileConfig(4, 2, 3)),
    ("pruned_layer", 4, 6, 5, 5, 1, 1, 1, True, True, LIB8, 1.0, TileConfig(2, 2, 0)),
    ("odd_library", 10, 6, 7, 9, 1, 1, 1, False, False, ODD_LIB, 0.2, TileConfig(2, 3, 0)),
    ("chunked", 32, 24, 14, 14, 1, 1, 1, True, True, LIB8, 0.5, TileConfig(4, 2, 5)),
    ("ragged_k", 5, 5, 7, 7, 1, 1, 1, False, False, LIB8, 0.0, TileConfig(4, 2, 0)),
    ("s2_odd", 6, 10, 7, 7, 2, 1, 1, True, False, LIB8, 0.5, TileConfig(2, 2, 4)),
    ("one_row", 3, 4, 1, 9, 1, 1, 1, False, True, ODD_LIB, 0.0, TileConfig(1, 2, 0)),
    ("to_1x1", 5, 3, 3, 3, 1, 0, 1, True, False, LIB8, 0.0, TileConfig(2, 1, 0)),
    ("big_map", 4, 6, 23, 31, 1, 1, 1, True, True, LIB8, 0.4, TileConfig(2, 4, 0)),
    # Stride 2 with taps in some phase planes only (the others are never padded): a 1x1 downsample as the centre
    # tap, and the top corners (phase 0).
    ("s2_centre", 6, 5, 9, 8, 2, 1, 1, False, True, [(4,)], 0.0, TileConfig(2, 2, 0)),
    ("s2_corners", 5, 6, 8, 9, 2, 1, 1, True, False, [(0,), (2,), (0, 2)], 0.3, TileConfig(2, 2, 3)),
    # Direct tiles read the padded input in place: chunks, ragged tiles, stride phases, dilation, no padding.
    ("direct_chunked", 32, 24, 14, 14, 1, 1, 1, True, True, LIB8, 0.5, TileConfig(4, 2, 5, direct=True)),
    ("direct_s2", 7, 9, 11, 6, 2, 0, 1, True, True, LIB8, 0.5, TileConfig(8, 1, 2, direct=True)),
    ("direct_dilated", 6, 6, 8, 8, 1, 2, 2, False, False, LIB8, 0.0, TileConfig(2, 3, 0, direct=True)),
]

# Dense 5x5 / 7x7 layers (a ResNet stem): name, C, K, H, W, kernel, stride, padding, relu, residual, tile.
LARGE_CASES = [
    ("stem7", 3, 10, 19, 17, 7, 2, 3, True, False, TileConfig(4, 6, 0, direct=True)),
    ("stem7_copy", 3, 6, 12, 12, 7, 2, 3, False, True, TileConfig(6, 4, 0)),
    ("k5_pad0", 5, 7, 9, 11, 5, 1, 0, True, True, TileConfig(2, 3, 2, direct=True)),
    ("k5_s2", 4, 9, 10, 9, 5, 2, 2, False, False, TileConfig(8, 2, 0)),
]


def _build_cases():
    layers = []
    for seed, (name, c, k, h, w, s, p, d, relu, res, lib, conn, tile) in enumerate(CASES):
        spec = ConvSpec(name, c, k, h, w, stride=s, padding=p, dilation=d, relu=relu, residual=res)
        weight = pattern_pruned(k, c, lib, connectivity=conn, seed=seed)
        if name == "pruned_filters":
            weight[[0, 3, 6]] = 0
        bias = torch.randn(k, generator=torch.Generator().manual_seed(100 + seed))
        layers.append((spec, weight, bias, tile))
    for seed, (name, c, k, h, w, size, s, p, relu, res, tile) in enumerate(LARGE_CASES, start=len(layers)):
        spec = ConvSpec(name, c, k, h, w, stride=s, padding=p, relu=relu, residual=res, kernel_size=size)
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(k, c, size, size, generator=gen)
        weight[0, 0] = 0  # a pruned kernel and a pruned filter: ops and blocks the generator must skip
        weight[-1] = 0
        layers.append((spec, weight, torch.randn(k, generator=gen), tile))
    return layers


def _compact(spec, weight, bias):
    return compact_conv(weight, bias, name=spec.name, max_entries=spec.kernel_size ** 2)


LAYERS = _build_cases()


@pytest.fixture(scope="module", params=runnable_isas())
def library(request, tmp_path_factory):
    isa = request.param
    # Eight-filter blocks (255 mask loops) take the portable build minutes: four is its largest block.
    tiles = [t if isa != "portable" or t.filters <= 4 else dataclasses.replace(t, filters=4) for *_, t in LAYERS]
    source = generate_source([(s, _compact(s, w, b), t) for (s, w, b, _), t in zip(LAYERS, tiles)], isa)
    return isa, build_library(source, isa=isa, cache_dir=tmp_path_factory.mktemp(f"lib_{isa}"))


def reference(spec, weight, bias, x, residual):
    y = F.conv2d(x, weight, bias, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if spec.relu else y


@pytest.mark.parametrize("batch, threads", [(1, 1), (3, 2)])
def test_every_layer_matches_conv2d(library, batch, threads):
    isa, path = library
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for index, (spec, weight, bias, _) in enumerate(LAYERS):
            gen = torch.Generator().manual_seed(index)
            x = torch.randn(batch, spec.in_channels, spec.height, spec.width, generator=gen)
            out_shape = (batch, spec.out_channels, spec.out_height, spec.out_width)
            residual = torch.randn(out_shape, generator=gen) if spec.residual else None
            expected = reference(spec, weight, bias, x, residual)
            got = CompiledConv(path, spec)(x, residual)
            assert got.shape == expected.shape, spec.name
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"{isa} {spec.name}")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("cin,cout,size", [(24, 16, 12), (16, 16, 32)])  # the second: direct tiles on 32x32
def test_candidate_tiles_compile_and_match(tmp_path, cin, cout, size):
    """The autotuner's candidates for a real-ish layer are all correct (default ISA only)."""
    isa = runnable_isas()[0]
    base = ConvSpec("cand", cin, cout, size, size, relu=True)
    weight = pattern_pruned(cout, cin, LIB8, connectivity=0.5, seed=9)
    bias = torch.randn(cout)
    compact = compact_conv(weight, bias, name="cand")
    tiles = candidate_tiles(base, isa)
    specs = [ConvSpec(f"cand_{t.label}", cin, cout, size, size, relu=True) for t in tiles]
    path = build_library(generate_source([(s, compact, t) for s, t in zip(specs, tiles)], isa), isa=isa,
                         cache_dir=tmp_path)
    x = torch.randn(2, cin, size, size)
    expected = reference(base, weight, bias, x, None)
    for spec in specs:
        torch.testing.assert_close(CompiledConv(path, spec)(x), expected, rtol=1e-4, atol=1e-4)


def test_direct_tiles_are_candidates_on_small_maps_only():
    small = candidate_tiles(ConvSpec("s", 256, 256, 14, 14), "avx512")
    assert [t.label for t in small if t.direct] == ["f6v4c128d", "f4v4c64d", "f4v7c64d"]
    for other in (ConvSpec("l", 64, 64, 56, 56), ConvSpec("s2", 128, 256, 28, 28, stride=2)):
        assert not any(t.direct for t in candidate_tiles(other, "avx512"))
    assert [t.label for t in candidate_tiles(ConvSpec("s", 256, 256, 14, 14), "avx2") if t.direct] == ["f4v3c64d"]
    assert not any(t.direct for t in candidate_tiles(ConvSpec("l", 64, 64, 56, 56), "avx2"))
    assert not any(t.direct for t in candidate_tiles(ConvSpec("s", 256, 256, 14, 14), "portable"))
    # larger maps whose padded input is small (a CIFAR ResNet's first stages) get them too
    for cifar in (ConvSpec("c16", 16, 16, 32, 32), ConvSpec("c32", 32, 32, 16, 16)):
        assert [t.label for t in candidate_tiles(cifar, "avx512") if t.direct] == ["f6v4c0d", "f4v4c0d", "f4v7c0d"]
    assert not any(t.direct for t in candidate_tiles(ConvSpec("w", 64, 64, 32, 32), "avx512"))


def test_avx2_tiles_fit_sixteen_registers():
    for spec in (ConvSpec("l", 64, 64, 56, 56), ConvSpec("s", 512, 512, 7, 7), ConvSpec("c", 16, 16, 32, 32)):
        tiles = candidate_tiles(spec, "avx2")
        assert tiles[0].label == ("f4v3c0" if spec.in_channels <= 32 else "f4v3c32")
        assert all(t.filters * t.vectors + t.vectors + 1 <= 16 for t in tiles)
    assert "f2v5c8" in [t.label for t in candidate_tiles(ConvSpec("c", 64, 64, 8, 8), "avx2")]


def test_large_kernels_get_wide_direct_tiles():
    stem = ConvSpec("stem", 3, 64, 224, 224, stride=2, padding=3, kernel_size=7)
    assert [t.label for t in candidate_tiles(stem, "avx512")] == ["f4v6c0p", "f4v6c0d", "f6v4c0d"]
    assert [t.label for t in candidate_tiles(stem, "avx2")] == ["f2v5c0p", "f4v3c0d", "f2v5c0d"]
    assert not any(t.direct for t in candidate_tiles(stem, "portable"))


def test_kernel_size_must_match_the_weights():
    spec, weight, bias, tile = next(layer for layer in LAYERS if layer[0].name == "stem7")
    with pytest.raises(UnsupportedConv, match="7x7, spec says 10x3, 3x3"):
        generate_source([(dataclasses.replace(spec, kernel_size=3), _compact(spec, weight, bias), tile)], "avx512")
    with pytest.raises(UnsupportedConv, match="kernel_size"):
        dataclasses.replace(spec, kernel_size=4)


def test_source_is_deterministic():
    spec, weight, bias, tile = LAYERS[0]
    layers = [(spec, compact_conv(weight, bias, name=spec.name), tile)]
    first = generate_source(layers, "avx512")
    assert first == generate_source(layers, "avx512")
    assert 'extern "C" void zd_basic(const float* x, const float* res, float* y, int batch, int threads)' in first
    assert "#include <torch" not in first and "ATen" not in first


def test_mismatched_or_duplicate_layers_refused():
    spec, weight, bias, tile = LAYERS[0]
    compact = compact_conv(weight, bias, name=spec.name)
    other = ConvSpec("basic", 9, 12, 5, 7)
    with pytest.raises(UnsupportedConv, match="compact weights are 12x8"):
        generate_source([(other, compact, tile)], "avx512")
    with pytest.raises(UnsupportedConv, match="unique"):
        generate_source([(spec, compact, tile), (spec, compact, tile)], "avx512")
    with pytest.raises(UnsupportedConv, match="unknown ISA"):
        generate_source([(spec, compact, tile)], "sse9")


@pytest.mark.parametrize("name", ["", "a;system(1)", "../x", "1abc", "a b", "x" * 200, None, "é"])
def test_hostile_layer_names_refused(name):
    with pytest.raises(UnsupportedConv, match="C identifier"):
        ConvSpec(name, 4, 4, 5, 5)


@pytest.mark.parametrize("kwargs, field", [
    ({"in_channels": 0}, "in_channels"), ({"height": -3}, "height"), ({"stride": 0}, "stride"),
    ({"padding": -1}, "padding"), ({"width": 1 << 20}, "width"), ({"height": 1, "padding": 0}, "empty output"),
    ({"in_channels": 2.5}, "in_channels")])
def test_bad_specs_refused(kwargs, field):
    args = dict(name="l", in_channels=4, out_channels=4, height=5, width=5)
    args.update(kwargs)
    with pytest.raises(UnsupportedConv, match=field):
        ConvSpec(**args)


@pytest.mark.parametrize("kwargs", [{"filters": 7}, {"vectors": 0}, {"vectors": 9}, {"channels": -1}, {"direct": 1}])
def test_bad_tiles_refused(kwargs):
    with pytest.raises(UnsupportedConv):
        TileConfig(**kwargs)


def test_compiled_conv_checks_its_inputs(library):
    _, path = library
    spec = next(s for s, *_ in LAYERS if s.name == "basic")
    op = CompiledConv(path, spec)
    x = torch.randn(1, 8, 5, 7)
    r = torch.randn(1, 12, 5, 7)
    with pytest.raises(KernelRuntimeError, match="shape"):
        op(torch.randn(1, 8, 5, 6), r)
    with pytest.raises(KernelRuntimeError, match="float32"):
        op(x.double(), r)
    with pytest.raises(KernelRuntimeError, match="contiguous"):
        op(torch.randn(1, 8, 7, 5).transpose(2, 3), r)
    with pytest.raises(KernelRuntimeError, match="residual"):
        op(x)
    with pytest.raises(KernelRuntimeError, match="4-D"):
        op(x[0], r)
    plain = CompiledConv(path, next(s for s, *_ in LAYERS if s.name == "stride2"))
    with pytest.raises(KernelRuntimeError, match="without a residual"):
        plain(torch.randn(1, 16, 9, 9), torch.randn(1, 8, 5, 5))
    with pytest.raises(KernelRuntimeError, match="no symbol"):
        CompiledConv(path, ConvSpec("missing", 4, 4, 5, 5))


def test_concurrent_callers_and_more_threads_than_cores(library):
    """The work-claiming pool: several Python threads at once, each asking for more threads than cores."""
    from concurrent.futures import ThreadPoolExecutor
    _, path = library
    spec, weight, bias, _ = next(layer for layer in LAYERS if layer[0].name == "chunked")
    op = CompiledConv(path, spec)
    inputs = [torch.randn(2, spec.in_channels, spec.height, spec.width) for _ in range(6)]
    residuals = [torch.randn(2, spec.out_channels, spec.out_height, spec.out_width) for _ in range(6)]
    previous = torch.get_num_threads()
    torch.set_num_threads(5)
    try:
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda i: op(inputs[i], residuals[i]), range(6)))
    finally:
        torch.set_num_threads(previous)
    for x, r, got in zip(inputs, residuals, outs):
        torch.testing.assert_close(got, reference(spec, weight, bias, x, r), rtol=1e-4, atol=1e-4)


def test_forked_child_runs_kernels_with_a_fresh_pool(library):
    """Celery's prefork workers fork: the child must not wait on the parent's threads or locks."""
    import os
    import time
    _, path = library
    spec, weight, bias, _ = next(layer for layer in LAYERS if layer[0].name == "big_map")
    x = torch.randn(3, spec.in_channels, spec.height, spec.width)
    r = torch.randn(3, spec.out_channels, spec.out_height, spec.out_width)
    expected = reference(spec, weight, bias, x, r)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        op = CompiledConv(path, spec)
        op(x, r)                                     # the parent's pool now has a worker
        pid = os.fork()
        if pid == 0:                                 # child: exit status says whether the result matched
            ok = torch.allclose(op(x, r), expected, rtol=1e-4, atol=1e-4)
            os._exit(0 if ok else 1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the kernel")
    finally:
        torch.set_num_threads(previous)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_oversize_batch_refused_before_the_kernel_runs(library, monkeypatch):
    import kernels.conv_op as conv_op
    _, path = library
    spec = next(s for s, *_ in LAYERS if s.name == "stride2")
    monkeypatch.setattr(conv_op, "MAX_ELEMENTS", 1000)   # a real oversize batch would need gigabytes
    with pytest.raises(KernelRuntimeError, match="split the batch"):
        CompiledConv(path, spec)(torch.randn(1, 16, 9, 9))


def test_avx2_direct_tiles_on_small_maps_take_every_tile_in_one_item():
    """Tiles innermost (one work item per filter group) only for avx2 direct tiles on 3x3 maps up to 14x14; the
    correctness of that loop order is covered by the direct cases above on every avx2 machine."""
    spec, weight, bias, _ = next(layer for layer in LAYERS if layer[0].name == "direct_chunked")
    compact = _compact(spec, weight, bias)
    inner = generate_source([(spec, compact, TileConfig(4, 2, 5, direct=True))], "avx2")
    assert "n = nt_ / 1," in inner and "t < t0 + 14;" in inner  # 14 rows of 16 floats, 16-float tiles
    for isa, tile in (("avx512", TileConfig(4, 2, 5, direct=True)), ("avx2", TileConfig(4, 2, 5))):
        assert "t < t0 + 1;" in generate_source([(spec, compact, tile)], isa)


def test_library_split_into_parallel_units_matches_conv2d(tmp_path, monkeypatch):
    """A big library is compiled as several units in parallel and linked: every layer (and the prelude's weak
    pooling and head symbols, present in each unit) still resolves and computes the same result."""
    monkeypatch.setattr(build, "UNIT_BYTES", 1)
    monkeypatch.setattr(build, "usable_cpus", lambda: 3)
    isa = runnable_isas()[0]
    layers = LAYERS[:5]
    source = generate_source([(s, _compact(s, w, b), t) for s, w, b, t in layers], isa)
    assert len(build.translation_units(source, 3)) == 3
    path = build_library(source, isa=isa, cache_dir=tmp_path)
    assert ctypes.CDLL(str(path)).zd_max_pool2d and ctypes.CDLL(str(path)).zd_classifier_head
    for index, (spec, weight, bias, _) in enumerate(layers):
        gen = torch.Generator().manual_seed(index)
        x = torch.randn(2, spec.in_channels, spec.height, spec.width, generator=gen)
        residual = torch.randn(2, spec.out_channels, spec.out_height, spec.out_width, generator=gen) if spec.residual else None
        torch.testing.assert_close(CompiledConv(path, spec)(x, residual), reference(spec, weight, bias, x, residual),
                                   rtol=1e-4, atol=1e-4, msg=spec.name)
