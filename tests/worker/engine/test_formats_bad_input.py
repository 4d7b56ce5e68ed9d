"""Bad input: every case fails early with an EngineError naming the option, layer or file, and a
failed run leaves nothing in the output folder. (No compression runs here: all fail before it.)"""
from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from torch import nn

from tests.hostile_models import CreatesMarker, pt2_with_pickled_weight, torch_save_zip
from tests.tiny_models import INPUT_SHAPE, export_pt2, export_torchscript, tiny_resnet
from tests.worker.engine.engine_models import DepthwiseOnly, seeded
from worker.engine import archive_safety
from worker.engine.artifacts import OutputExistsError
from worker.engine.config import CompressionConfig
from worker.engine.errors import (CorruptModelError, EngineError, InvalidConfigError, UnsafeModelError,
                                  UnsupportedModelError)
from worker.engine.formats import load_model
from worker.engine.run import compress_file
from worker.progress import NullProgress


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    return export_pt2(tiny_resnet(), tmp_path_factory.mktemp("bad") / "tiny.pt2")


def run(model, out, **changes):
    return compress_file(model, out, dataclasses.replace(CompressionConfig(), **changes), NullProgress())


@pytest.mark.parametrize("changes, named", [
    ({"entries": 0}, "entries"), ({"entries": 10}, "entries"), ({"library_size": 0}, "library_size"),
({"connectivity": 1.0}, "connectivity"),
    ({"connectivity": -0.1}, "connectivity"), ({"connectivity": float("nan")}, "connectivity"),
    ({"linear_rate": 1.5}, "linear_rate"), ({"target_compression": 0.5}, "target_compression"),
    ({"synthetic": "real-data"}, "synthetic"), ({"synthetic_samples": 0}, "synthetic_samples"),
    ({"recovery_steps": -1}, "recovery_steps"), ({"time_budget_s": 0}, "time_budget_s"),
    ({"input_shape": (1, 3, 16)}, "input_shape"), ({"input_shape": (1, 3, 0, 16)}, "input_shape"),
    ({"device": "tpu"}, "device"), ({"input_shape": (1, 3, 100_000, 100_000)}, "input_shape"),
    ({"synthetic_samples": 10**9}, "synthetic_samples"), ({"time_budget_s": float("inf")}, "time_budget_s"),
])
def test_bad_options_are_named(tiny_pt2, tmp_path, changes, named):
    with pytest.raises(InvalidConfigError, match=named):
        run(tiny_pt2, tmp_path / "out", **changes)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tiny_pt2, tmp_path):
    with pytest.raises(InvalidConfigError, match="no CUDA"):
        run(tiny_pt2, tmp_path / "out", device="cuda")


def test_nan_weights_name_the_tensor(tmp_path):
    model = tiny_resnet()
    with torch.no_grad():
        model.layer1.conv2.weight[0, 0, 1, 1] = float("nan")
    path = export_pt2(model, tmp_path / "nan.pt2")
    with pytest.raises(UnsupportedModelError, match=r"layer1\.conv2\.weight.*NaN"):
        run(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_double_precision_model_names_the_dtype_and_the_fix(tmp_path):
    """float64 is refused, not converted: a round trip through float32 would round every weight never pruned
    (float16 and bfloat16 are pruned in float32 and saved back exactly: test_formats_half_precision.py)."""
    model = tiny_resnet().to(torch.float64)
    program = torch.export.export(model, (torch.randn(*INPUT_SHAPE, dtype=torch.float64),))
    torch.export.save(program, str(tmp_path / "double.pt2"))
    with pytest.raises(UnsupportedModelError, match=r"conv1\.weight is float64.*model\.float\(\)"):
        run(tmp_path / "double.pt2", tmp_path / "out")
    assert not (tmp_path / "out").exists()


class NoThreeByThree(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_model_without_3x3_convs(tmp_path):
    path = export_pt2(NoThreeByThree().eval(), tmp_path / "flat.pt2")
    with pytest.raises(UnsupportedModelError, match="no prunable 3x3"):
        run(path, tmp_path / "out")


def test_model_exported_in_training_mode(tmp_path):
    program = torch.export.export(tiny_resnet().train(), (torch.randn(2, *INPUT_SHAPE[1:]),))
    torch.export.save(program, str(tmp_path / "train.pt2"))
    with pytest.raises(UnsupportedModelError, match=r"'bn1' was exported in training mode.*model.eval\(\)"):
        load_model(tmp_path / "train.pt2")


def test_input_shape_that_contradicts_the_model(tiny_pt2, tmp_path):
    with pytest.raises(InvalidConfigError, match=r"input_shape \[1, 3, 32, 32\] does not match"):
        run(tiny_pt2, tmp_path / "out", input_shape=(1, 3, 32, 32))


def test_torchscript_shape_missing_or_wrong(tmp_path):
    path = export_torchscript(tiny_resnet(), tmp_path / "tiny.pt")
    with pytest.raises(InvalidConfigError, match="input shape"):
        run(path, tmp_path / "out")
    with pytest.raises(InvalidConfigError, match=r"does not run on an input of shape \[1, 5, 16, 16\]"):
        run(path, tmp_path / "out", input_shape=(1, 5, 16, 16))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", b"PK\x03\x04" + bytes(100), bytes(range(256)) * 8])
def test_corrupt_or_unknown_files(tmp_path, content):
    path = tmp_path / "model.pt2"
    path.write_bytes(content)
    with pytest.raises(EngineError):
        run(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_oversize_onnx_is_refused(tmp_path, monkeypatch):
    from worker.engine.formats import onnx_import
    from tests.tiny_models import export_onnx

    path = export_onnx(tiny_resnet(), tmp_path / "tiny.onnx")
    monkeypatch.setattr(onnx_import, "MAX_ONNX_BYTES", path.stat().st_size - 1)
    with pytest.raises(UnsafeModelError, match="limit"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CorruptModelError, match="does not exist"):
        load_model(tmp_path / "nope.pt2")


def test_pickled_payload_is_refused_and_never_runs(tiny_pt2, tmp_path):
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(tiny_pt2, tmp_path / "evil.pt2", torch_save_zip(pickle.dumps(CreatesMarker(marker))))
    with pytest.raises(UnsafeModelError):
        run(evil, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_weights_only_loading_holds_even_without_the_archive_check(tiny_pt2, tmp_path, monkeypatch):
    """Defence in depth: with archive_safety bypassed, torch.export.load still may not unpickle code."""
    marker = tmp_path / "pwned"
    evil = pt2_with_pickled_weight(tiny_pt2, tmp_path / "evil.pt2", torch_save_zip(pickle.dumps(CreatesMarker(marker))))
    monkeypatch.setattr(archive_safety, "check_pt2_archive", lambda path, limits=None: None)
    with pytest.raises(CorruptModelError):
        load_model(evil)
    assert not marker.exists()


def test_non_empty_output_folder_needs_force(tiny_pt2, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        run(tiny_pt2, out)
    # With force, a run that fails (here: a bad shape) still leaves the old folder untouched.
    with pytest.raises(InvalidConfigError):
        compress_file(tiny_pt2, out, CompressionConfig(input_shape=(1, 3, 8, 8)), NullProgress(), force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left beside it


def test_depthwise_only_model_names_the_options_that_would_prune_it(tmp_path):
    path = export_pt2(seeded(DepthwiseOnly), tmp_path / "mobile.pt2")
    with pytest.raises(UnsupportedModelError, match=r"no prunable 3x3.*set prune_depthwise=true or "
                                                    r"prune_first_conv=true or linear_sparsity=2:4"):
        run(path, tmp_path / "out")
