"""`zerodata compile` and `zerodata bench` on a tiny .pt2, plus the bad inputs a user can type."""
import json

import pytest
import torch
from click.testing import CliRunner

from app.cli import main
from tests.kernels.compiled_models import pattern_tiny_resnet
from tests.tiny_models import export_pt2


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return export_pt2(pattern_tiny_resnet(), tmp_path_factory.mktemp("cli") / "pruned.pt2")


@pytest.fixture(scope="module")
def package(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_pkg") / "pkg"
    result = run("compile", model_file, "--out", out, "--no-tune", "--cache-dir", out.parent / "cache")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_compile_writes_a_package_and_prints_the_layers(package, model_file):
    out, output = package
    assert (out / "manifest.json").is_file() and (out / "model.pt2").is_file()
    assert "layer1.conv2" in output and "sparse" in output and "compiled for" in output
    import kernels
    from worker.engine.formats import load_model
    dense = load_model(model_file).module
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(kernels.load(out)(x), dense(x), atol=1e-5)


def test_bench_a_package_prints_the_speed_table(package, tmp_path):
    out, _ = package
    report = tmp_path / "speed.json"
    result = run("bench", out, "--runs", 3, "--batches", "1,2", "--json", report)
    assert result.exit_code == 0, result.output
    assert "torch dense" in result.output and "ORT dense" in result.output
    speed = json.loads(report.read_text())
    assert set(speed["batches"]) == {"1", "2"}
    for row in speed["batches"].values():
        assert row["sparse_ms"] > 0 and row["torch_dense_ms"] > 0 and row["onnxruntime_dense_ms"] > 0
        assert row["max_rel_error"] < 1e-4
    assert speed["layers"] and speed["package_bytes"] > 0


def test_bench_a_model_file_compiles_it_first(model_file, tmp_path):
    result = run("bench", model_file, "--runs", 2, "--batches", "1", "--no-tune", "--out", tmp_path / "pkg")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pkg" / "manifest.json").is_file()


@pytest.mark.parametrize("shape", ["a,b,c,d", "1,3,16", "0,3,16,16", "1,3,16,99999", "1,-3,16,16", ""])
def test_bad_input_shape_is_a_usage_error(model_file, tmp_path, shape):
    result = run("compile", model_file, "--out", tmp_path / "pkg", "--input-shape", shape)
    assert result.exit_code == 2 and "--input-shape" in result.output


@pytest.mark.parametrize("batches", ["0", "a", "1,,2", "99999", ",".join(["1"] * 17)])
def test_bad_batches_are_a_usage_error(package, batches):
    result = run("bench", package[0], "--batches", batches)
    assert result.exit_code == 2 and "--batches" in result.output


def test_missing_garbage_and_non_package_inputs(tmp_path):
    assert run("compile", tmp_path / "nope.pt2", "--out", tmp_path / "pkg").exit_code == 2
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"\x00" * 1000)
    result = run("compile", garbage, "--out", tmp_path / "pkg")
    assert result.exit_code == 1 and "Error" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "pkg").exists()
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    result = run("bench", empty)
    assert result.exit_code == 1 and "not a zerodata kernel package" in result.output


def test_compile_trims_its_build_cache(model_file, tmp_path, monkeypatch):
    """The CLI's caches get the worker's cap: an old build goes, the one just made (fresh) stays."""
    import os
    import time

    from app.config import get_settings

    monkeypatch.setenv("ZERODATA_CACHE_MAX_BYTES", "1000")
    get_settings.cache_clear()
    cache = tmp_path / "cache"
    stale = cache / "zd_stale.so"
    cache.mkdir()
    stale.write_bytes(b"x" * 5000)
    os.utime(stale, (time.time() - 7200,) * 2)
    result = run("compile", model_file, "--out", tmp_path / "pkg", "--no-tune", "--cache-dir", cache)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert not stale.exists() and list(cache.glob("zd_*.so"))
