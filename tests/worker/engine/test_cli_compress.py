"""`zerodata compress` end to end (real engine, tiny model, tiny budgets) and its failure modes:
one clear line, non-zero exit, nothing left in --out."""
from __future__ import annotations

import io

import pytest
import torch
from click.testing import CliRunner

from app.cli import main
from app.cli.progress_bar import TqdmProgress
from tests.tiny_models import export_pt2, tiny_resnet

# Compile and measure are covered by tests/worker/test_pipeline.py; here the engine side of the command.
TINY = ["--samples", "8", "--steps", "1", "--recovery-steps", "1", "--connectivity", "0.5", "--quiet", "--no-compile",
        "--no-measure",
        "--set", "fidelity_samples=8", "--set", "admm_iterations=2"]


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory):
    return export_pt2(tiny_resnet(), tmp_path_factory.mktemp("cli") / "tiny.pt2")


def invoke(*args):
    return CliRunner().invoke(main, ["compress", *map(str, args)])


def test_compress_writes_the_artifacts_and_a_summary(tiny_pt2, tmp_path):
    out = tmp_path / "out"
    result = invoke(tiny_pt2, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["masks.safetensors", "model.pt2", "report.html", "report.json"]
    assert "3x3-conv compression" in result.output and "top1_agreement" in result.output
    # a second run refuses the non-empty folder; --force with a run that fails leaves it intact
    again = invoke(tiny_pt2, "--out", out, *TINY)
    assert again.exit_code == 1 and "not empty" in again.output and "--force" in again.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failed = invoke(tiny_pt2, "--out", out, *TINY, "--force", "--input-shape", "1,3,8,8")
    assert failed.exit_code == 1 and "does not match" in failed.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (["--connectivity", "1.5"], "connectivity must be in [0, 1)"),
    (["--entries", "0"], "entries must be"),
    (["--library-size", "0"], "library_size must be"),
    (["--set", "linear_sparsity=\"3:4\""], "linear_sparsity must be"),
])
def test_bad_options_fail_in_one_line(tiny_pt2, tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke(tiny_pt2, "--out", out, *TINY, *args)
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tiny_pt2, tmp_path):
    result = invoke(tiny_pt2, "--out", tmp_path / "out", "--device", "cuda", *TINY)
    assert result.exit_code == 1 and "no CUDA device" in result.output


@pytest.mark.parametrize("args", [["--input-shape", "1,3,x"], ["--input-shape", "1,3,16"], ["--set", "nope=1"],
                                  ["--set", "entries"]])
def test_malformed_arguments_are_usage_errors(tiny_pt2, tmp_path, args):
    result = invoke(tiny_pt2, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and not (tmp_path / "out").exists()


def test_failed_run_leaves_nothing(tmp_path):
    model = tiny_resnet()
    with torch.no_grad():
        model.layer2.conv1.weight.fill_(float("inf"))
    path = export_pt2(model, tmp_path / "inf.pt2")
    result = invoke(path, "--out", tmp_path / "out", *TINY)
    assert result.exit_code == 1 and "layer2.conv1.weight" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inf.pt2"]


def test_unwritable_output_location_is_one_line(tiny_pt2, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke(tiny_pt2, "--out", blocker / "out", *TINY)
    assert result.exit_code == 1 and result.output.startswith("Error:")
    assert len(result.output.strip().splitlines()) == 1


def test_progress_bar_restarts_a_repeated_stage():
    stream = io.StringIO()
    progress = TqdmProgress(stream=stream)
    progress.update("synthesize", 3, 4)
    progress.update("synthesize", 1, 4, "second set")
    assert progress.bar.n == 1
    progress.close()


def test_progress_bar_shows_stage_layer_and_eta():
    stream = io.StringIO()
    progress = TqdmProgress(stream=stream)
    progress.update("prune", 0, 4, "layer1.0.conv1")
    progress.update("prune", 2, 4, "layer1.1.conv1")
    progress.update("recover", 5, 10, "step 5")
    progress.check_cancelled()
    progress.close()
    text = stream.getvalue()
    assert "prune" in text and "2/4" in text and "layer1.1.conv1" in text and "recover" in text
    assert "<" in text  # tqdm's elapsed<remaining (ETA)
