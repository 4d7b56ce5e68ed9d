"""Runs of compiled layers in one library call: the arena plan, whole models bit-identical to layer-by-layer calls,
and the segment's input checks."""
import random

import pytest
import torch

import kernels
from kernels.errors import KernelRuntimeError
from kernels.graph_ops import CompiledLayer
from kernels.segments import ALIGN, CompiledSegment, fuse_compiled_segments, plan_arena
from tests.kernels.compiled_models import pattern_tiny_resnet, session_cache, small_vgg
from tests.kernels.test_padded_layout import BIG, big_example, branchy, pooled


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return session_cache(tmp_path_factory)


def _segments(compiled) -> list[CompiledSegment]:
    return [m for m in compiled.graph.modules() if isinstance(m, CompiledSegment)]


def test_arena_regions_never_overlap_while_live():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        sizes = [None if rng.random() < 0.2 else rng.randint(1, 100) for _ in range(n)]
        last_use = [rng.randint(i, n - 1) for i in range(n)]
        offsets, total = plan_arena(sizes, last_use)
        live = [i for i in range(n) if sizes[i] is not None]
        assert all(offsets[i] is None for i in range(n) if sizes[i] is None)
        assert all(offsets[i] % ALIGN == 0 and offsets[i] + sizes[i] <= total for i in live)
        for i in live:
            for j in live:
                # j is written at step j while i is still to be read (i < j <= last_use[i]): disjoint regions
                if i < j <= last_use[i]:
                    assert offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i], (sizes, last_use)


def test_arena_reuses_what_a_chain_has_finished_with():
    # a chain: each output read only by the next step; two regions alternate
    offsets, total = plan_arena([64] * 6, [1, 2, 3, 4, 5, 5])
    assert total == 128 and len(set(offsets)) == 2


@pytest.mark.parametrize("factory, shape, min_segments", [
    (pattern_tiny_resnet, BIG, 1), (branchy, BIG, 1), (pooled, (3, 48, 48), 1), (small_vgg, (3, 16, 16), 0),
], ids=["tiny_resnet", "branchy", "pooled", "small_vgg"])
def test_models_in_segments_are_bit_identical_to_layer_calls(factory, shape, min_segments, tmp_path, cache):
    model = factory()
    kernels.compile_model(model, big_example(shape=shape), tmp_path / "pkg", tune=False, cache_dir=cache)
    fused, layered = kernels.load(tmp_path / "pkg"), kernels.load(tmp_path / "pkg", segments=False)
    assert len(_segments(fused)) >= min_segments
    assert not _segments(layered)
    with torch.no_grad():
        for batch in (1, 3):
            x = big_example(batch, seed=batch, shape=shape)
            got = fused(x)
            assert torch.equal(got, layered(x))
            torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)


def test_a_tiny_resnet_runs_its_compiled_layers_in_segments(tmp_path, cache):
    model = pattern_tiny_resnet()
    kernels.compile_model(model, big_example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    compiled = kernels.load(tmp_path / "pkg")
    in_segments = sum(len(s.layers) for s in _segments(compiled))
    left = [m.layer for m in compiled.graph.modules() if isinstance(m, CompiledLayer)]
    sparse = [layer["name"] for layer in compiled.manifest["layers"] if layer["kernel"] == "sparse"]
    assert in_segments + len(left) == len(sparse) and in_segments >= 2


def test_segment_checks_its_inputs(tmp_path, cache):
    model = pattern_tiny_resnet()
    kernels.compile_model(model, big_example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    segment = _segments(kernels.load(tmp_path / "pkg"))[0]
    shape = segment._input_shapes[0]
    good = torch.randn(2, *shape)
    assert len(segment(*[torch.randn(2, *s) for s in segment._input_shapes])) == len(segment._output_shapes)
    with pytest.raises(KernelRuntimeError, match="shape"):
        segment(torch.randn(2, *shape[:-1], shape[-1] + 1), *[torch.randn(2, *s) for s in segment._input_shapes[1:]])
    with pytest.raises(KernelRuntimeError, match="float32"):
        segment(good.double(), *[torch.randn(2, *s) for s in segment._input_shapes[1:]])
    with pytest.raises(KernelRuntimeError, match="batch 0"):
        segment(torch.randn(0, *shape), *[torch.randn(0, *s) for s in segment._input_shapes[1:]])
    # a strided view is made contiguous, not misread
    wide = torch.randn(2, *shape[:-1], 2 * shape[-1])[..., ::2]
    rest = [torch.randn(2, *s) for s in segment._input_shapes[1:]]
    assert all(torch.equal(a, b) for a, b in zip(segment(wide, *rest), segment(wide.contiguous(), *rest)))


def test_libraries_without_the_step_runner_keep_layer_calls(tmp_path, cache, monkeypatch):
    model = pattern_tiny_resnet()
    kernels.compile_model(model, big_example(), tmp_path / "pkg", tune=False, cache_dir=cache)
    compiled = kernels.load(tmp_path / "pkg", segments=False)
    import kernels.segments as segments

    class Old:  # a library generated before zd_run_steps existed
        pass

    monkeypatch.setattr(segments, "load_library", lambda path: Old())
    assert fuse_compiled_segments(compiled.graph) == 0
    with torch.no_grad():
        torch.testing.assert_close(compiled(big_example()), model(big_example()), rtol=1e-4, atol=1e-4)
