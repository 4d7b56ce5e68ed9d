"""Autotuning decisions: sparse only when correct and faster; the whole model never slower than dense."""
import time
from types import SimpleNamespace

import pytest
import torch

import kernels
import kernels.graph_compile as graph_compile
from kernels.autotune import batch_checks, choose, dense_reference, time_interleaved
from kernels.bench import sparse_layers_at
from kernels.graph_ops import BatchDispatch
from kernels.spec import ConvSpec
from tests.kernels.compiled_models import assert_close, example, session_cache, two_conv_block

# Contenders return a precomputed result so only the sleep decides who is faster, however busy the machine.
REFERENCE = dense_reference(torch.randn(4, 3, 3, 3), torch.randn(4), (1, 1), (1, 1), relu=True)(
    torch.randn(1, 3, 8, 8))
X = torch.randn(1, 3, 8, 8)


def fast(x, residual=None):
    return REFERENCE


def slow(x, residual=None):
    time.sleep(0.005)
    return REFERENCE


def wrong(x, residual=None):
    return REFERENCE + 1e-2


def test_time_interleaved_reports_a_median_per_contender():
    times = time_interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, budget_s=0.05, min_runs=5)
    assert set(times) == {"fast", "slow"}
    assert times["slow"] >= 2.0 > times["fast"]


def test_a_faster_correct_variant_wins():
    choice = choose(slow, {"f4v4": fast}, {"f4v4": "TILE"}, X, None, budget_s=0.05)
    assert choice.kernel == "sparse" and choice.tile == "TILE" and choice.sparse_ms < choice.dense_ms
    assert choice.max_rel_error == 0


def test_a_slower_variant_loses_with_its_numbers():
    choice = choose(fast, {"f4v4": slow}, {"f4v4": "TILE"}, X, None, budget_s=0.05)
    assert choice.kernel == "dense" and "not at least 3% faster" in choice.reason
    assert choice.candidates[0]["ms"] >= 5.0


def test_a_burst_of_load_during_the_first_timing_does_not_throw_sparse_away():
    calls = []

    def slow_at_first(x, residual=None):
        # The first 12 calls are disturbed: the correctness check, 2 warm-ups and at most 8 timed runs (each round
        # takes >= 7 ms of a 50 ms budget) of the first timing window, and at most one of the second's warm-ups.
        calls.append(None)
        if len(calls) <= 12:
            time.sleep(0.005)
        return REFERENCE

    def dense(x, residual=None):
        time.sleep(0.002)
        return REFERENCE

    choice = choose(dense, {"f4v4": slow_at_first}, {"f4v4": "TILE"}, X, None, budget_s=0.05)
    assert choice.kernel == "sparse" and choice.sparse_ms < 2.0 <= choice.dense_ms
    assert choice.candidates[0]["ms"] >= 5.0  # the first window's number stays on record


def test_a_wrong_variant_is_never_chosen_however_fast():
    choice = choose(slow, {"f4v4": wrong}, {"f4v4": "TILE"}, X, None, budget_s=0.05)
    assert choice.kernel == "dense" and "disagrees" in choice.reason


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tuned")
    model = two_conv_block()
    manifest = kernels.compile_model(model, example(), root / "pkg", tune=True,
                                     cache_dir=session_cache(tmp_path_factory))
    return model, root / "pkg", manifest


def test_tuning_times_every_candidate_and_dense(tuned):
    model, package_dir, manifest = tuned
    timed = [layer for layer in manifest["layers"] if "spec" in layer]
    assert timed
    for layer in timed:
        assert layer["dense_ms"] > 0 and layer["candidates"]
        assert all(c["ms"] is not None and c["ms"] > 0 for c in layer["candidates"])
        if layer["kernel"] == "sparse":
            assert layer["sparse_ms"] <= layer["dense_ms"]
            assert [c["batch"] for c in layer["batch_checks"]] == [8] and "dense_from_batch" in layer
            assert layer["tile"]["filters"] >= 1 and layer["effective_gflops"] > 0
        else:
            assert layer["reason"]
    assert {"dense_torch_ms", "compiled_ms", "fallback"} <= set(manifest["whole_model"])
    x = example(2)
    with torch.no_grad():
        assert_close(kernels.load(package_dir)(x), model(x))


def test_a_same_shape_layer_times_only_the_tile_the_first_one_chose(tuned):
    _, _, manifest = tuned
    first, second = [layer for layer in manifest["layers"] if "spec" in layer]  # both 8->8, same density
    assert len(first["candidates"]) > 1 and "tile_tuned_on" not in first
    ms = {c["tile"]: c["ms"] for c in first["candidates"] if c["max_rel_error"] <= 1e-4}
    assert second["tile_tuned_on"] == first["name"]
    [reused] = [c["tile"] for c in second["candidates"]]
    assert ms[reused] == min(ms.values())  # the manifest rounds to 0.1 us: ties are possible on tiny layers


def test_connectivity_rates_a_little_apart_share_a_shape_class():
    spec = ConvSpec("c", 32, 32, 16, 16)
    def shape_class(density, spec=spec):
        return graph_compile._shape_class(spec, SimpleNamespace(density=density), False)
    # every layer of a connectivity-pruned model has its own density: tuning each apart doubled the compile time
    assert shape_class(0.21) == shape_class(0.29)
    assert shape_class(4 / 9) != shape_class(0.21) != shape_class(0.1)
    assert shape_class(0.21) != shape_class(0.21, ConvSpec("c", 32, 32, 16, 16, stride=2))


def test_whole_model_slower_than_dense_ships_all_dense(tmp_path, tmp_path_factory, monkeypatch):
    def compiled_looks_slower(fns, **kwargs):
        return {name: (2.0 if name == "compiled" else 1.0) for name in fns}
    monkeypatch.setattr(graph_compile, "time_interleaved", compiled_looks_slower)
    model = two_conv_block()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=True,
                                     cache_dir=session_cache(tmp_path_factory))
    assert manifest["whole_model"]["fallback"] is True
    assert all(layer["kernel"] == "dense" for layer in manifest["layers"])
    assert any("whole model" in layer["reason"] for layer in manifest["layers"])
    assert not (tmp_path / "pkg" / "kernels.so").exists()
    x = example(2)
    with torch.no_grad():
        assert_close(kernels.load(tmp_path / "pkg")(x), model(x))


def test_batch_checks_find_the_batch_where_dense_wins():
    def dense_2ms(x, residual=None):
        time.sleep(0.002)
        return REFERENCE

    def sparse_slow_from_4(x, residual=None):
        time.sleep(0.008 if x.shape[0] >= 4 else 0.0)
        return REFERENCE
    rows, dense_from = batch_checks(dense_2ms, sparse_slow_from_4, X, None, (1, 2, 4, 8), budget_s=0.02)
    assert [r["batch"] for r in rows] == [2, 4, 8]
    assert [r["kernel"] for r in rows] == ["sparse", "dense", "dense"] and dense_from == 4
    assert batch_checks(slow, fast, X, None, (8,), budget_s=0.02)[1] is None


def test_layers_dense_at_batch_8_run_dense_there(tmp_path, tmp_path_factory, monkeypatch):
    def dense_wins_at_8(dense_fn, sparse_fn, x, residual, batches, budget_s=0.3):
        return [{"batch": 8, "dense_ms": 1.0, "sparse_ms": 2.0, "kernel": "dense"}], 8
    monkeypatch.setattr(graph_compile, "batch_checks", dense_wins_at_8)
    monkeypatch.setattr(graph_compile, "time_interleaved",  # the whole model must not fall back to dense here
                        lambda fns, **kwargs: {name: (1.0 if name == "compiled" else 2.0) for name in fns})
    monkeypatch.setattr(graph_compile, "choose", lambda dense_fn, fns, tiles, x, residual: choose(
        slow, {label: fast for label in fns}, tiles, x, residual, budget_s=0.02))
    model = two_conv_block()
    manifest = kernels.compile_model(model, example(), tmp_path / "pkg", tune=True,
                                     cache_dir=session_cache(tmp_path_factory))
    sparse = [layer for layer in manifest["layers"] if layer["kernel"] == "sparse"]
    assert sparse and all(layer["dense_from_batch"] == 8 for layer in sparse)
    assert sparse_layers_at(manifest, 1) == len(sparse) and sparse_layers_at(manifest, 8) == 0
    loaded = kernels.load(tmp_path / "pkg")
    dispatch = [m for m in loaded.modules() if isinstance(m, BatchDispatch)]
    assert len(dispatch) == len(sparse)
    calls = []
    for m in dispatch:
        m.dense.register_forward_hook(lambda *args: calls.append("dense"))
    with torch.no_grad():
        for batch in (1, 8):
            x = example(batch)
            assert_close(loaded(x), model(x))
            assert len(calls) == (0 if batch == 1 else len(sparse))
