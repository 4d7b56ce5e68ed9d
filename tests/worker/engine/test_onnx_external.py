"""ONNX models with their tensors in a side file (torch.onnx.export's default): the local CLI inlines them,
following only a plain file name beside the model; the service keeps refusing them."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from app.cli import main
from tests.tiny_models import export_onnx, tiny_resnet
from worker.engine.archive_safety import check_onnx_file
from worker.engine.errors import UnsafeModelError
from worker.engine.formats.onnx_external import has_external_data, inline_external_data
from worker.engine.safety.errors import ModelTooLargeError

GiB = 1 << 30


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return export_onnx(tiny_resnet(), tmp_path_factory.mktemp("clean") / "tiny.onnx")


def with_side_file(clean, folder, location="tiny.onnx.data"):
    """The clean model saved as torch.onnx.export(..., external_data=True) saves it: every tensor in one file."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(clean)
    onnx.save_model(model, folder / "tiny.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return folder / "tiny.onnx"


def initializers(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_inlined_copy_is_self_contained_and_equal(clean, tmp_path):
    split = with_side_file(clean, tmp_path / "split")
    assert has_external_data(split) and not has_external_data(clean)
    with pytest.raises(UnsafeModelError, match="external_data=False"):  # the service's refusal says how to fix it
        check_onnx_file(split, max_bytes=GiB)
    count = inline_external_data(split, tmp_path / "one.onnx", GiB)
    assert count == len(onnx.load(clean).graph.initializer) > 0
    check_onnx_file(tmp_path / "one.onnx", max_bytes=GiB)
    got, want = initializers(tmp_path / "one.onnx"), initializers(clean)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


def test_constant_node_tensors_are_inlined_too(clean, tmp_path):
    model = onnx.load(clean)
    value = numpy_helper.from_array(np.arange(6, dtype=np.float32), "c")
    model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c_out"], value=value))
    onnx.save_model(model, tmp_path / "c.onnx", save_as_external_data=True, location="c.data", size_threshold=0)
    inline_external_data(tmp_path / "c.onnx", tmp_path / "one.onnx", GiB)
    constant = onnx.load(tmp_path / "one.onnx", load_external_data=False).graph.node[0].attribute[0].t
    assert constant.data_location == onnx.TensorProto.DEFAULT
    assert np.array_equal(numpy_helper.to_array(constant), np.arange(6, dtype=np.float32))


def _relocate(path, location=None, offset=None, length=None):
    model = onnx.load(path, load_external_data=False)
    entries = {e.key: e for e in model.graph.initializer[0].external_data}
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            if key not in entries:
                entries[key] = model.graph.initializer[0].external_data.add()
                entries[key].key = key
            entries[key].value = value
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location, message", [
    ("../tiny.onnx.data", "plain file name"), ("/etc/passwd", "plain file name"), ("sub/tiny.onnx.data", "plain file name"),
    ("C:secret", "plain file name"), ("..", "plain file name"), ("missing.data", "not a regular file"),
])
def test_locations_outside_the_folder_are_never_followed(clean, tmp_path, location, message):
    split = _relocate(with_side_file(clean, tmp_path / "split"), location=location)
    with pytest.raises(UnsafeModelError, match=message):
        inline_external_data(split, tmp_path / "one.onnx", GiB)
    assert not (tmp_path / "one.onnx").exists()


def test_symlinked_side_file_is_refused(clean, tmp_path):
    split = with_side_file(clean, tmp_path / "split")
    os.rename(tmp_path / "split" / "tiny.onnx.data", tmp_path / "real.data")
    os.symlink(tmp_path / "real.data", tmp_path / "split" / "tiny.onnx.data")
    with pytest.raises(UnsafeModelError, match="not a symlink"):
        inline_external_data(split, tmp_path / "one.onnx", GiB)


@pytest.mark.parametrize("offset, length", [("0", str(10 ** 9)), ("-4", "4"), ("abc", "4")])
def test_ranges_outside_the_side_file_are_refused(clean, tmp_path, offset, length):
    split = _relocate(with_side_file(clean, tmp_path / "split"), offset=offset, length=length)
    with pytest.raises(UnsafeModelError, match="outside|not integers"):
        inline_external_data(split, tmp_path / "one.onnx", GiB)


def test_size_cap_counts_the_side_file(clean, tmp_path):
    split = with_side_file(clean, tmp_path / "split")
    with pytest.raises(ModelTooLargeError, match="external data"):
        inline_external_data(split, tmp_path / "one.onnx", split.stat().st_size + 100)


def test_cli_compile_reads_a_split_onnx(clean, tmp_path):
    split = with_side_file(clean, tmp_path / "split")
    result = CliRunner().invoke(main, ["compile", str(split), "--out", str(tmp_path / "pkg"), "--no-tune",
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "inlined into one .onnx" in result.output and (tmp_path / "pkg" / "manifest.json").is_file()
    assert sorted(p.name for p in split.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.data"]  # inputs untouched


def test_cli_reports_a_refused_location_in_one_line(clean, tmp_path):
    split = _relocate(with_side_file(clean, tmp_path / "split"), location="../../etc/passwd")
    result = CliRunner().invoke(main, ["compile", str(split), "--out", str(tmp_path / "pkg"), "--no-tune"])
    assert result.exit_code == 1 and "plain file name" in result.output
    assert not (tmp_path / "pkg").exists()
