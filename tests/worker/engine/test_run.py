"""compress_file end to end with the real compress_module on tiny models and tiny budgets: the
output folder holds a pruned model in the input's format (stock loaders), masks that match the
saved zeros, and a report following docs/report-schema.md."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from tests.tiny_models import INPUT_SHAPE, export_onnx, export_pt2, export_torchscript, tiny_resnet
from tests.worker.engine.engine_models import NoBatchNorm, seeded
from worker.engine.artifacts import read_masks
from worker.engine.config import CompressionConfig
from worker.engine.run import compress_file
from worker.progress import RecordingProgress

TINY_BUDGET = dict(synthetic_samples=8, synthetic_steps=1, recovery_steps=1, connectivity=0.5, seed=3)


def small_config(**changes) -> CompressionConfig:
    config = CompressionConfig(**{**TINY_BUDGET, **changes})
    if hasattr(config, "fidelity_samples"):
        config.fidelity_samples = 8
    if hasattr(config, "admm_iterations"):
        config.admm_iterations = 2
    return config


def check_masks_match(masks: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], entries: int) -> None:
    assert masks
    for name, mask in masks.items():
        weight = weights[name]
        assert mask.shape == weight.shape and mask.dtype == torch.bool
        assert torch.all(weight[~mask] == 0), name
        per_kernel = mask.reshape(mask.shape[0], mask.shape[1], -1).sum(-1)
        assert int(per_kernel.max()) <= entries


@pytest.fixture(scope="module")
def pt2_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    model = export_pt2(tiny_resnet(), folder / "tiny.pt2")
    progress = RecordingProgress()
    report = compress_file(model, folder / "out", small_config(), progress)
    return model, folder / "out", report, progress


def test_output_folder_holds_exactly_the_artifacts(pt2_run):
    _, out, report, _ = pt2_run
    assert sorted(p.name for p in out.iterdir()) == ["masks.safetensors", "model.pt2", "report.json"]
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_report_follows_the_schema(pt2_run):
    model, _, report, _ = pt2_run
    assert {"zerodata_version", "created_at", "model", "config", "compression", "fidelity", "sizes"} <= set(report)
    assert report["model"]["format"] == "pt2" and report["model"]["input_shape"] == list(INPUT_SHAPE)
    assert report["model"]["bytes"] == model.stat().st_size and len(report["model"]["sha256"]) == 64
    assert report["config"]["connectivity"] == 0.5
    assert {"pattern_library", "layers"} <= set(report["compression"])
    assert "top1_agreement" in report["fidelity"]
    assert report["sizes"]["model_bytes_after"] > 0 and report["sizes"]["masks_bytes"] > 0
    assert "warning" not in report["fidelity"]  # inverted from BatchNorm statistics: no noise-input caveat


def test_fidelity_on_noise_inputs_says_it_cannot_be_trusted(tmp_path):
    # on gaussian inputs a VGG's agreement read 0.969 against 0.609 on real images: the report must not present
    # that as fidelity
    model = export_pt2(seeded(NoBatchNorm), tmp_path / "nobn.pt2")
    report = compress_file(model, tmp_path / "out", small_config(synthetic="gaussian"), RecordingProgress())
    assert report["compression"]["fidelity_inputs"]["mode"] == "gaussian"
    assert "gaussian-noise inputs" in report["fidelity"]["warning"]
    assert any("do not trust or gate on this agreement" in w for w in report["warnings"])


def test_inputs_cut_by_the_time_budget_are_a_warning(tmp_path):
    model = export_pt2(tiny_resnet(), tmp_path / "m.pt2")
    config = small_config(synthetic_samples=64, synthetic_steps=40, time_budget_s=1e-3)
    report = compress_file(model, tmp_path / "out", config, RecordingProgress())
    assert report["config"]["synthetic_samples"] < 64 and report["config"]["synthetic_steps"] < 40
    assert any("time budget cut the synthetic inputs from 64 x 40" in w for w in report["warnings"])


def test_saved_model_loads_with_stock_torch_and_carries_the_masks(pt2_run):
    _, out, report, _ = pt2_run
    program = torch.export.load(str(out / "model.pt2"))
    masks, meta = read_masks(out / "masks.safetensors")
    assert meta["entries"] == 4 and meta["pattern_library"] == report["compression"]["pattern_library"]
    check_masks_match(masks, program.state_dict, entries=4)
    for batch in (1, 3):  # same dynamic batch as the upload
        assert program.module()(torch.randn(batch, *INPUT_SHAPE[1:])).shape == (batch, 10)


def test_saved_archive_is_deflated_and_smaller_than_the_upload(pt2_run):
    """torch writes every member stored; the pruned zeros compress, so the download shrinks."""
    _, out, report, _ = pt2_run
    with zipfile.ZipFile(out / "model.pt2") as archive:
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert report["sizes"]["model_bytes_after"] == (out / "model.pt2").stat().st_size
    assert report["sizes"]["model_bytes_after"] < 0.7 * report["sizes"]["model_bytes_before"]


def test_progress_reports_every_stage(pt2_run):
    *_, progress = pt2_run
    stages = [e[1] for e in progress.events]
    assert stages[0] == "load" and stages[-1] == "save"
    assert "prune" in stages


def test_onnx_run_writes_the_users_graph_back(tmp_path):
    model = export_onnx(tiny_resnet(), tmp_path / "tiny.onnx")
    report = compress_file(model, tmp_path / "out", small_config(synthetic="bn-inversion"), RecordingProgress())
    out = tmp_path / "out" / "model.onnx"
    assert report["model"]["format"] == "onnx"
    # torch.onnx folded BN into the convs: the loader says why, the engine falls back explicitly
    assert any("BatchNormalization" in w for w in report["warnings"])
    assert report["compression"]["synthetic"]["mode"] == "prior-inversion"
    assert any("no BatchNorm" in w and "bn-inversion" in w for w in report["warnings"])
    original, pruned = onnx.load(str(model)), onnx.load(str(out))
    assert [n.op_type for n in original.graph.node] == [n.op_type for n in pruned.graph.node]
    masks, meta = read_masks(tmp_path / "out" / "masks.safetensors")
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in pruned.graph.initializer}
    check_masks_match({meta["source_names"][k]: v for k, v in masks.items()}, weights, entries=4)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((2, *INPUT_SHAPE[1:]), np.float32)})[0].shape == (2, 10)


def test_torchscript_run(tmp_path):
    model = export_torchscript(tiny_resnet(), tmp_path / "tiny.pt")
    report = compress_file(model, tmp_path / "out", small_config(input_shape=INPUT_SHAPE), RecordingProgress())
    assert report["model"]["format"] == "torchscript"
    script = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    with zipfile.ZipFile(tmp_path / "out" / "model.pt") as archive:
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    masks, _ = read_masks(tmp_path / "out" / "masks.safetensors")
    check_masks_match(masks, script.state_dict(), entries=4)


def test_model_with_two_outputs_keeps_both(tmp_path):
    """A segmentation map plus an auxiliary head: pruned, saved with both outputs, fidelity on the first."""
    from tests.worker.engine.engine_models import SegmentationWithAuxHead, seeded

    model = seeded(SegmentationWithAuxHead)
    model.train()
    with torch.no_grad():
        model(torch.randn(16, *INPUT_SHAPE[1:]))  # non-trivial BatchNorm statistics
    model.eval()
    program = torch.export.export(model, (torch.randn(*INPUT_SHAPE),))
    torch.export.save(program, str(tmp_path / "seg.pt2"))
    report = compress_file(tmp_path / "seg.pt2", tmp_path / "out", small_config(), RecordingProgress())
    assert 0.0 <= report["fidelity"]["top1_agreement"] <= 1.0
    seg, aux = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()(torch.randn(*INPUT_SHAPE))
    assert seg.shape == (1, 4, *INPUT_SHAPE[2:]) and aux.shape == (1, 2)
    masks, _ = read_masks(tmp_path / "out" / "masks.safetensors")
    assert list(masks) == ["conv2.weight"]  # conv1 is the 3-channel stem, left dense by default
