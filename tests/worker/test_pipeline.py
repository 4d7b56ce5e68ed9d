"""The shared pipeline end to end on a tiny model: real engine, real kernel compiler, real measurement."""
import json

import pytest
import torch

from tests.tiny_models import export_pt2, tiny_resnet
from worker.engine.artifacts import OutputExistsError
from worker.engine.errors import EngineError, InvalidConfigError
from worker.pipeline import run_pipeline, split_config
from worker.progress import RecordingProgress

TINY_BUDGET = {"synthetic_samples": 16, "synthetic_steps": 4, "recovery_steps": 4, "seed": 1}


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    return export_pt2(tiny_resnet(), tmp_path_factory.mktemp("model") / "tiny.pt2")


def test_all_stages_write_every_artifact(tiny_pt2, tmp_path):
    progress = RecordingProgress()
    out = tmp_path / "job"
    report = run_pipeline(tiny_pt2, out, {**TINY_BUDGET, "tune": False, "bench_runs": 3}, progress,
                          cache_dir=tmp_path / "cache")

    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.pt2", "masks.safetensors", "sparse.zip", "report.json", "report.html"])
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report, default=str))
    assert {"compression", "fidelity", "speed", "sizes", "seconds"} <= report.keys()
    assert report["sizes"]["sparse_package_bytes"] == (out / "sparse.zip").stat().st_size
    assert report["speed"]["batches"]["1"]["sparse_ms"] > 0
    assert {"compress", "compile", "measure", "total"} <= report["seconds"].keys()
    assert {stage for _, stage, *_ in progress.events} >= {"load", "compile"}
    assert torch.export.load(str(out / "model.pt2")).module()(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "job"]  # no temporary folders left


def test_compile_and_measure_can_be_skipped(tiny_pt2, tmp_path):
    report = run_pipeline(tiny_pt2, tmp_path / "job", {**TINY_BUDGET, "compile": False, "measure": False},
                          RecordingProgress())
    assert "speed" not in report
    assert not (tmp_path / "job" / "sparse.zip").exists()


def test_no_compiler_still_delivers_the_pruned_model(tiny_pt2, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++, c++ or clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    report = run_pipeline(tiny_pt2, tmp_path / "job", dict(TINY_BUDGET), RecordingProgress())
    assert "speed" not in report
    assert any("no C++ compiler" in w for w in report["warnings"])
    assert (tmp_path / "job" / "model.pt2").exists() and not (tmp_path / "job" / "sparse.zip").exists()


def test_unknown_option_is_refused_by_name():
    with pytest.raises(InvalidConfigError, match="colour"):
        split_config({"colour": "red"})


def test_failure_leaves_no_output(tmp_path):
    corrupt = tmp_path / "broken.pt2"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(EngineError):
        run_pipeline(corrupt, tmp_path / "job", dict(TINY_BUDGET), RecordingProgress())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt2"]


def test_existing_output_folder_is_kept_unless_forced(tiny_pt2, tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "precious.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not empty"):
        run_pipeline(tiny_pt2, tmp_path / "job", dict(TINY_BUDGET), RecordingProgress())
    assert (tmp_path / "job" / "precious.txt").exists()

    run_pipeline(tiny_pt2, tmp_path / "job", {**TINY_BUDGET, "compile": False, "measure": False},
                 RecordingProgress(), force=True)
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["masks.safetensors", "model.pt2",
                                                                   "report.html", "report.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]


def test_model_with_two_outputs_is_compiled_and_measured(tmp_path):
    """A segmentation map plus an auxiliary head: the package returns both outputs, checked against dense."""
    from tests.worker.engine.engine_models import SegmentationWithAuxHead, seeded

    model = seeded(SegmentationWithAuxHead)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "seg.pt2"))
    report = run_pipeline(tmp_path / "seg.pt2", tmp_path / "job", {**TINY_BUDGET, "tune": False, "bench_runs": 3},
                          RecordingProgress(), cache_dir=tmp_path / "cache")
    assert "warnings" not in report or not any("sparse kernels" in w for w in report["warnings"])
    assert report["speed"]["batches"]["1"]["max_rel_error"] < 1e-4
    assert (tmp_path / "job" / "sparse.zip").exists()
