"""The package directory: contents, hashes, rebuild paths, and hostile or broken packages."""
import json
import shutil

import pytest
import torch

import kernels
from kernels import package as pkg
from kernels.errors import KernelError
from kernels.isa import detect_isa
from tests.kernels.compiled_models import assert_close, example, pattern_tiny_resnet, session_cache


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(model, package dir, manifest), compiled once for the module."""
    root = tmp_path_factory.mktemp("package")
    model = pattern_tiny_resnet()
    manifest = kernels.compile_model(model, example(), root / "pkg", tune=False,
                                     cache_dir=session_cache(tmp_path_factory))
    return model, root / "pkg", manifest


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the package that a test may damage."""
    target = tmp_path / "pkg"
    shutil.copytree(built[1], target)
    return target


def _check_equal(model, package_dir, **load_kwargs):
    x = example(3, seed=7)
    with torch.no_grad():
        assert_close(kernels.load(package_dir, **load_kwargs)(x), model(x))


def test_package_holds_every_file_with_matching_hashes(built):
    _, package_dir, manifest = built
    for name in (pkg.MANIFEST, pkg.WEIGHTS, pkg.SOURCE, pkg.LIBRARY, pkg.GRAPH, pkg.README):
        assert (package_dir / name).is_file(), name
    on_disk = json.loads((package_dir / pkg.MANIFEST).read_text())
    assert on_disk == manifest
    for name, digest in manifest["files"].items():
        assert pkg.sha256_file(package_dir / name) == digest
    assert manifest["isa"] == detect_isa()
    assert manifest["compiler"] and "-O3" in manifest["flags"]
    assert manifest["torch_version"] == torch.__version__ and manifest["dynamic_batch"]
    sparse = [layer for layer in manifest["layers"] if layer["kernel"] == "sparse"]
    assert sparse and all({"spec", "tile", "format", "symbol"} <= set(layer) for layer in sparse)
    pruned = [layer for layer in sparse if layer["format"]["density"] < 0.5]  # the 3-channel stem is unpruned
    assert pruned and all(layer["format"]["compact_bytes"] < layer["format"]["dense_bytes"] for layer in pruned)
    assert not [p for p in package_dir.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_readme_says_how_to_rebuild_and_call(built):
    _, package_dir, manifest = built
    readme = (package_dir / pkg.README).read_text()
    assert "g++ " in readme and "kernels.cpp -o kernels.so" in readme
    symbol = next(layer["symbol"] for layer in manifest["layers"] if layer["kernel"] == "sparse")
    assert f"zd_{symbol}(const float* x" in readme and "kernels.load" in readme
    assert "zd_max_pool2d(" in readme and "zd_classifier_head(" in readme
    assert f"zd_{symbol}" in (package_dir / pkg.SOURCE).read_text()


def test_missing_library_is_rebuilt_from_source(built, copy, tmp_path_factory):
    (copy / pkg.LIBRARY).unlink()
    cache = session_cache(tmp_path_factory)  # the build cache compile_model filled: same source, same key
    module = kernels.load(copy, cache_dir=cache)
    assert module.library.parent == cache
    _check_equal(built[0], copy, cache_dir=cache)


def test_library_for_another_isa_is_regenerated_from_compact_weights(built, copy, tmp_path):
    manifest = json.loads((copy / pkg.MANIFEST).read_text())
    manifest["isa"] = "avx2" if detect_isa() != "avx2" else "avx512"
    (copy / pkg.MANIFEST).write_text(json.dumps(manifest))
    (copy / pkg.SOURCE).unlink()  # the shipped source is for the other ISA: not needed
    module = kernels.load(copy, cache_dir=tmp_path / "cache")
    assert module.library.parent == tmp_path / "cache"
    _check_equal(built[0], copy, cache_dir=tmp_path / "cache")


def test_tampered_library_is_never_loaded(built, copy, tmp_path_factory):
    (copy / pkg.LIBRARY).write_bytes(b"\x7fELF not really a library")
    cache = session_cache(tmp_path_factory)
    module = kernels.load(copy, cache_dir=cache)
    assert module.library.parent == cache
    _check_equal(built[0], copy, cache_dir=cache)


@pytest.mark.parametrize("name", [pkg.GRAPH, pkg.SOURCE])
def test_tampered_graph_or_source_is_refused(copy, name):
    (copy / pkg.LIBRARY).unlink()  # force the source to be read
    (copy / name).write_bytes((copy / name).read_bytes()[:-10] + b"0123456789")
    with pytest.raises(pkg.PackageError, match="hash"):
        kernels.load(copy)


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "top level"),
    (json.dumps({"format_version": 99, "layers": [], "files": {}}).encode(), "format_version"),
    (json.dumps({"format_version": 1, "layers": [{"name": "a", "kernel": "evil"}], "files": {}}).encode(),
     "kernel must be"),
    (json.dumps({"format_version": 1, "layers": "all", "files": {}}).encode(), "layers"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_malformed_manifest_is_a_clear_error(copy, content, message):
    (copy / pkg.MANIFEST).write_bytes(content)
    with pytest.raises(pkg.PackageError, match=message):
        kernels.load(copy)


def test_oversize_manifest_is_refused(copy):
    (copy / pkg.MANIFEST).write_bytes(b" " * (pkg.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(pkg.PackageError, match="larger than"):
        kernels.load(copy)


def test_hostile_layer_spec_is_refused(copy):
    manifest = json.loads((copy / pkg.MANIFEST).read_text())
    sparse = next(layer for layer in manifest["layers"] if layer["kernel"] == "sparse")
    sparse["spec"]["name"] = "x(); system(\"rm -rf /\"); void y"
    (copy / pkg.MANIFEST).write_text(json.dumps(manifest))
    (copy / pkg.LIBRARY).unlink()
    with pytest.raises(KernelError, match="C identifier"):
        kernels.load(copy)
    sparse["spec"] = {"unexpected": 1}
    (copy / pkg.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(pkg.PackageError, match="malformed layer spec"):
        kernels.load(copy)


def test_not_a_package(tmp_path):
    with pytest.raises(pkg.PackageError, match="not a package directory"):
        kernels.load(tmp_path / "missing")
    with pytest.raises(pkg.PackageError, match="no manifest.json"):
        kernels.load(tmp_path)


def test_compile_replaces_a_package_but_not_other_directories(built, copy, tmp_path, tmp_path_factory):
    model, cache = built[0], session_cache(tmp_path_factory)
    kernels.compile_model(model, example(), copy, tune=False, cache_dir=cache)
    assert (copy / pkg.MANIFEST).is_file()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(pkg.PackageError, match="refusing"):
        kernels.compile_model(model, example(), precious, tune=False, cache_dir=cache)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
