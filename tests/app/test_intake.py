"""Intake in the API process: every refusal has the right status and a clear message, clean models
get a correct summary, and a malicious payload's code never runs."""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from app.intake import IntakeError, ModelSummary, inspect_upload, sniff_format
from tests.hostile_models import (SHARED_MODELS, evil_pickle, global_call_pickle, onnx_with_external_data,
                                  pt2_with_pickled_weight, rewrite_zip, set_encrypted_flag, symlink_info,
                                  torch_save_zip, zip_with, zip_with_info)
from worker.engine.archive_safety import UnsafeModelError, check_pt2_archive

MAX = 1 << 30
RESNET20_PT2 = SHARED_MODELS / "resnet20_cifar10.pt2"
RESNET20_ONNX = SHARED_MODELS / "resnet20_cifar10.onnx"


def refused(path: Path, status: int, match: str, max_bytes: int = MAX) -> IntakeError:
    with pytest.raises(IntakeError, match=match) as caught:
        inspect_upload(path, max_bytes=max_bytes)
    assert caught.value.status_code == status, caught.value.message
    assert caught.value.message.startswith("upload: ")  # names the upload, not a temp file
    return caught.value


# ---- accepted ----

@pytest.mark.parametrize("ext", ["pt2", "onnx"])
def test_resnet20_summary(ext):
    summary = inspect_upload(SHARED_MODELS / f"resnet20_cifar10.{ext}", max_bytes=MAX)
    assert isinstance(summary, ModelSummary)
    assert summary.format == ext
    assert round(summary.params / 1e6, 2) == 0.27
    assert len(summary.prunable_layers) == 19
    assert summary.prunable_layers[0] == "conv1" and summary.prunable_layers[-1] == "layer3.2.conv2"
    assert summary.input_shape == [1, 3, 32, 32]
    assert summary.warnings == []


def test_resnet56_summary():
    summary = inspect_upload(SHARED_MODELS / "resnet56_cifar10.pt2", max_bytes=MAX)
    assert (round(summary.params / 1e6, 2), len(summary.prunable_layers)) == (0.85, 55)


def test_tiny_torchscript_summary(tmp_path):
    from tests.tiny_models import export_torchscript, tiny_resnet
    model = tiny_resnet()
    summary = inspect_upload(export_torchscript(model, tmp_path / "m.bin"), max_bytes=MAX)
    assert summary.format == "torchscript"
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert summary.prunable_layers == ["conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2"]
    assert summary.input_shape == [1, 3, 16, 16]


def test_renamed_onnx_is_detected_as_onnx(tmp_path):
    renamed = tmp_path / "model.pt2"
    renamed.write_bytes(RESNET20_ONNX.read_bytes())
    assert sniff_format(renamed) == "onnx"
    assert inspect_upload(renamed, max_bytes=MAX).format == "onnx"


# ---- malformed ----

def test_empty_file(tmp_path):
    (tmp_path / "e").touch()
    refused(tmp_path / "e", 400, "empty")


def test_truncated_pt2(tmp_path):
    path = tmp_path / "cut.pt2"
    path.write_bytes(RESNET20_PT2.read_bytes()[:400_000])
    refused(path, 400, "truncated or corrupt")


def test_corrupt_pt2_member(tmp_path):
    data = bytearray(RESNET20_PT2.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a weight: the CRC no longer matches
    path = tmp_path / "flip.pt2"
    path.write_bytes(bytes(data))
    refused(path, 400, "unreadable|corrupt")


def test_truncated_onnx(tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(RESNET20_ONNX.read_bytes()[:300_000])
    refused(path, 400, "truncated")


@pytest.mark.parametrize("content, hint", [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "PNG image"),
                                           (b"name,accuracy\nresnet,0.9\n", "text")])
def test_unknown_formats(tmp_path, content, hint):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    error = refused(path, 415, hint)
    assert "upload a torch.export .pt2" in error.message


def test_random_zip_is_unknown(tmp_path):
    refused(zip_with(tmp_path / "r.pt2", {"docs/readme.txt": b"hello"}), 415, "neither")


# ---- hostile containers ----

def _pt2_like(extra: dict[str, bytes]) -> dict[str, bytes]:
    return {"m/archive_format": b"pt2", "m/archive_version": b"0", **extra}


def test_too_many_entries(tmp_path):
    path = zip_with(tmp_path / "many.pt2", _pt2_like({f"m/extra/{i}": b"" for i in range(10_001)}))
    refused(path, 400, "more than the limit of 10000")


def test_zip_bomb(tmp_path):
    path = zip_with(tmp_path / "bomb.pt2", _pt2_like({"m/extra/zeros": bytes(256 << 20)}), zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    refused(path, 413, "zip bomb")


@pytest.mark.parametrize("name", ["/etc/passwd", "m/../../../root/.ssh/authorized_keys"])
def test_escaping_member_names(tmp_path, name):
    refused(zip_with(tmp_path / "n.pt2", _pt2_like({name: b"x"})), 400, "absolute path|'\\.\\.'")


def test_symlink_member(tmp_path):
    path = zip_with_info(tmp_path / "l.pt2", symlink_info("m/extra/link"), b"/etc/shadow", base=_pt2_like({}))
    refused(path, 400, "symbolic link")


def test_encrypted_member(tmp_path):
    path = set_encrypted_flag(zip_with(tmp_path / "x.pt2", _pt2_like({})))
    refused(path, 400, "encrypted")


# ---- pickled payloads ----

def test_pickled_payload_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "marker-created-by-payload"
    path = pt2_with_pickled_weight(RESNET20_PT2, tmp_path / "evil.pt2", torch_save_zip(evil_pickle(marker)))
    error = refused(path, 400, "io.open")
    assert "weight_0" in error.message
    with pytest.raises(UnsafeModelError, match="io.open"):  # the engine runs the same check before loading
        check_pt2_archive(path)
    assert not marker.exists()


def test_pickled_sample_inputs_refused(tmp_path):
    marker = tmp_path / "marker"
    path = rewrite_zip(RESNET20_PT2, tmp_path / "evil.pt2",
                       replace={"data/sample_inputs/model.pt": torch_save_zip(evil_pickle(marker))})
    refused(path, 400, "sample_inputs")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("subprocess", "check_output")])
def test_pickle_naming_dangerous_global(tmp_path, module, name):
    payload = torch_save_zip(global_call_pickle(module, name, "touch /tmp/zerodata-pwned"))
    path = pt2_with_pickled_weight(RESNET20_PT2, tmp_path / "evil.pt2", payload)
    error = refused(path, 400, f"{module}.{name}")
    assert "could run arbitrary code" in error.message


# ---- ONNX ----

@pytest.mark.parametrize("location, why", [("../../../etc/passwd", "outside the upload"),
                                           ("/etc/passwd", "absolute path")])
def test_onnx_external_data(tmp_path, location, why):
    refused(onnx_with_external_data(RESNET20_ONNX, tmp_path / "x.onnx", location), 400, why)


def test_onnx_over_the_cap():
    refused(RESNET20_ONNX, 413, "more than the limit", max_bytes=1_000_000)


def test_intake_module_never_imports_torch():
    import subprocess
    code = "import sys, app.intake; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
