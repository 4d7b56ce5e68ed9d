"""Build cache and failure paths: cache hit without recompiling, compiler errors with stderr, no compiler."""
import ctypes
import os
import time
from pathlib import Path

import pytest

from kernels import build
from kernels.build import LAYER_MARK, build_libraries, build_library, cache_key, compiler_flags, translation_units
from kernels.errors import KernelBuildError
from kernels.isa import runnable_isas

SOURCE = 'extern "C" int zd_answer(void) { return 42; }\n'


def test_builds_loads_and_hits_cache(tmp_path):
    isa = runnable_isas()[0]
    first = build_library(SOURCE, isa=isa, cache_dir=tmp_path)
    assert ctypes.CDLL(str(first)).zd_answer() == 42
    inode = first.stat().st_ino
    os.utime(first, (time.time() - 7200,) * 2)
    second = build_library(SOURCE, isa=isa, cache_dir=tmp_path)
    assert second == first
    assert second.stat().st_ino == inode                    # not rebuilt (a build replaces the file)
    assert time.time() - second.stat().st_mtime < 600       # but marked used, for the worker's cache trim
    assert [p.name for p in tmp_path.iterdir()] == [first.name]   # no temp files left behind


def test_builds_several_libraries_side_by_side_in_order(tmp_path):
    sources = [SOURCE.replace("42", str(answer)) for answer in (1, 2, 3)]
    paths = build_libraries(sources, isa="portable", cache_dir=tmp_path)
    assert [ctypes.CDLL(str(p)).zd_answer() for p in paths] == [1, 2, 3]
    with pytest.raises(KernelBuildError) as info:
        build_libraries([SOURCE, 'extern "C" int broken( {\n'], isa="portable", cache_dir=tmp_path)
    assert "error" in info.value.stderr


def test_key_depends_on_source_flags_and_compiler(tmp_path):
    flags = compiler_flags("portable")
    base = cache_key(SOURCE, flags, "g++ 12")
    assert base != cache_key(SOURCE + " ", flags, "g++ 12")
    assert base != cache_key(SOURCE, compiler_flags("avx2"), "g++ 12")
    assert base != cache_key(SOURCE, flags, "g++ 13")
    other = build_library(SOURCE.replace("42", "43"), isa="portable", cache_dir=tmp_path)
    assert ctypes.CDLL(str(other)).zd_answer() == 43


def test_compiler_error_carries_stderr(tmp_path):
    with pytest.raises(KernelBuildError) as info:
        build_library('extern "C" int broken( { return undefined_name; }\n', isa="portable", cache_dir=tmp_path)
    assert "error" in info.value.stderr
    assert "compiler stderr" in str(info.value)
    assert not any(p.suffix == ".so" for p in tmp_path.iterdir())


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(KernelBuildError, match="no C\\+\\+ compiler found"):
        build_library(SOURCE, isa="portable", cache_dir=tmp_path, compiler="/nonexistent/g++")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(KernelBuildError, match="no C\\+\\+ compiler found"):
        build_library(SOURCE, isa="portable", cache_dir=tmp_path)


def test_broken_compiler_is_a_clear_error(tmp_path):
    fake = tmp_path / "fake-g++"
    fake.write_text("#!/bin/sh\necho 'fake compiler exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(KernelBuildError, match="version"):
        build_library(SOURCE, isa="portable", cache_dir=tmp_path / "c", compiler=str(fake))


@pytest.mark.parametrize("source", ["", "   \n", None])
def test_empty_source_refused(tmp_path, source):
    with pytest.raises(KernelBuildError, match="empty"):
        build_library(source, isa="portable", cache_dir=tmp_path)


def test_unknown_isa_refused(tmp_path):
    with pytest.raises(Exception, match="unknown ISA"):
        build_library(SOURCE, isa="avx1024", cache_dir=tmp_path)


def test_concurrent_reader_never_sees_partial_library(tmp_path):
    # The library appears by rename: either absent or complete (ELF magic at the start).
    path = build_library(SOURCE, isa="portable", cache_dir=tmp_path)
    with open(path, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert os.access(path, os.R_OK)


def test_translation_units_keep_the_prelude_and_every_layer_once():
    layers = [f'extern "C" int zd_l{i}(void) {{ return {i}; }}\n' + "//" + "x" * (100 * i) for i in range(7)]
    source = LAYER_MARK.join(["// prelude\n"] + layers)
    assert translation_units(source, 1) == [source]                      # one CPU: one unit
    assert translation_units(source, 4) == [source]                      # under UNIT_BYTES per unit: one unit
    units = translation_units(source, 3, unit_bytes=1)
    assert len(units) == 3
    assert all(unit.startswith("// prelude\n") for unit in units)
    assert sorted(layer for unit in units for layer in unit.split(LAYER_MARK)[1:]) == sorted(layers)


@pytest.fixture
def split_builds(monkeypatch):
    """Every multi-layer source is split into two units, however small."""
    monkeypatch.setattr(build, "UNIT_BYTES", 1)
    monkeypatch.setattr(build, "usable_cpus", lambda: 2)


def test_error_in_one_unit_of_a_split_build_carries_stderr(tmp_path, split_builds):
    source = LAYER_MARK.join(["// prelude\n", SOURCE, 'extern "C" int broken( { return undefined_name; }\n'])
    assert len(translation_units(source, 2)) == 2
    with pytest.raises(KernelBuildError) as info:
        build_library(source, isa="portable", cache_dir=tmp_path)
    assert "undefined_name" in info.value.stderr
    assert not any(p.suffix == ".so" for p in tmp_path.iterdir())


def test_split_build_links_every_unit(tmp_path, split_builds):
    source = LAYER_MARK.join(["// prelude\n", SOURCE, SOURCE.replace("answer", "other").replace("42", "7")])
    assert len(translation_units(source, 2)) == 2
    library = ctypes.CDLL(str(build_library(source, isa="portable", cache_dir=tmp_path)))
    assert (library.zd_answer(), library.zd_other()) == (42, 7)


def _layer(name: str, value: int) -> str:
    return SOURCE.replace("answer", name).replace("42", str(value))


def test_a_bigger_source_links_the_units_an_earlier_build_compiled(tmp_path, split_builds, monkeypatch):
    compiled: list[str] = []
    real = build._run_compiler

    def recording(cxx, args):
        compiled.extend(Path(a).read_text() for a in args if a.endswith(".cpp"))
        return real(cxx, args)
    monkeypatch.setattr(build, "_run_compiler", recording)
    first = LAYER_MARK.join(["// prelude\n", _layer("a", 1), _layer("b", 2)])
    build_library(first, isa="portable", cache_dir=tmp_path)
    assert len(compiled) == 2
    compiled.clear()
    units = list((tmp_path / "units").rglob("*.o"))
    for unit in units:
        os.utime(unit, (time.time() - 7200,) * 2)
    bigger = LAYER_MARK.join(["// prelude\n", _layer("c", 3), _layer("b", 2), _layer("a", 1)])
    library = ctypes.CDLL(str(build_library(bigger, isa="portable", cache_dir=tmp_path)))
    assert (library.zd_a(), library.zd_b(), library.zd_c()) == (1, 2, 3)
    assert len(compiled) == 1 and "zd_c" in compiled[0] and "zd_a" not in compiled[0]   # only the new layer
    assert all(time.time() - unit.stat().st_mtime < 600 for unit in units)   # reuse marks them used
    compiled.clear()
    other_prelude = LAYER_MARK.join(["// another prelude\n", _layer("a", 1), _layer("b", 2)])
    build_library(other_prelude, isa="portable", cache_dir=tmp_path)
    assert len(compiled) == 2                                  # units are reused only under the same prelude


def test_a_damaged_unit_listing_is_ignored(tmp_path, split_builds):
    source = LAYER_MARK.join(["// prelude\n", _layer("a", 1), _layer("b", 2)])
    first = build_library(source, isa="portable", cache_dir=tmp_path)
    for listing in (tmp_path / "units").rglob("*.json"):
        listing.write_text("{not json")
    first.unlink()
    library = ctypes.CDLL(str(build_library(source, isa="portable", cache_dir=tmp_path)))
    assert (library.zd_a(), library.zd_b()) == (1, 2)
