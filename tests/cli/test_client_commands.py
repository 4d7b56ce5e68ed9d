"""The CI client (`zerodata submit/status/download/jobs/delete`) against the real server and a real worker."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.app.helpers import tiny_pt2_bytes
from tests.service_harness import ROOT, ZERODATA, free_port

pytestmark = pytest.mark.e2e
TINY = ["--synthetic-samples", "16", "--synthetic-steps", "5", "--recovery-steps", "5",
        "--set", "fidelity_samples=16", "--set", "admm_iterations=5", "--set", "tune=false", "--set", "bench_runs=3",
        "--quiet"]


@pytest.fixture(scope="module")
def key(service):
    return service.create_key("cli-tests")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.pt2"
    path.write_bytes(tiny_pt2_bytes())
    return path


def run(args, *, server=None, key=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERODATA_")}
    if server:
        env["ZERODATA_URL"] = server
    if key:
        env["ZERODATA_API_KEY"] = key
    return subprocess.run([ZERODATA, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def measured_job(service, key, model_file, tmp_path_factory):
    """One real job with compile + measure on, waited for and downloaded by the client."""
    out = tmp_path_factory.mktemp("out")
    result = run(["submit", str(model_file), "--wait", "--out", str(out), "--min-speedup", "0.01",
                  "--min-agreement", "0.0", "--max-size-mb", "100", *TINY], server=service.url, key=key)
    return result, out


def test_submit_wait_success_downloads_and_passes_gates(measured_job):
    result, out = measured_job
    assert result.returncode == 0, result.stderr
    assert "succeeded:" in result.stdout and "vs ONNX Runtime" in result.stdout
    names = {p.name for p in out.iterdir()}
    assert {"model.pt2", "report.json", "report.html", "masks.safetensors", "sparse.zip"} <= names
    assert not [n for n in names if n.endswith(".part")]
    report = json.loads((out / "report.json").read_text())
    assert "speed" in report and "fidelity" in report


def test_missed_speed_gate_exits_7(service, key, model_file, tmp_path):
    result = run(["submit", str(model_file), "--wait", "--out", str(tmp_path), "--no-compile", "--no-measure",
                  "--min-speedup", "1.0", *TINY], server=service.url, key=key)
    assert result.returncode == 7, result.stderr
    assert "gate missed: speed gate: the report has no speed measurement" in result.stderr


def test_missed_size_and_fidelity_gates_exit_7(measured_job, service, key, model_file, tmp_path):
    result = run(["submit", str(model_file), "--wait", "--out", str(tmp_path), "--no-compile", "--no-measure",
                  "--max-size-mb", "0.000001", "--min-agreement", "1.0", *TINY], server=service.url, key=key)
    report = json.loads((tmp_path / "report.json").read_text())
    assert result.returncode == 7, result.stderr
    assert "size gate" in result.stderr
    if report["fidelity"]["top1_agreement"] < 1.0:
        assert "fidelity gate" in result.stderr


def test_failed_job_exits_1_with_the_error(service, key, model_file, tmp_path):
    result = run(["submit", str(model_file), "--wait", "--out", str(tmp_path), "--no-compile", "--no-measure",
                  "--set", "input_shape=[1,5,16,16]", *TINY], server=service.url, key=key)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "failed:" in result.stderr


def test_invalid_option_is_refused_by_the_server(service, key, model_file):
    result = run(["submit", str(model_file), "--entries", "42"], server=service.url, key=key)
    assert result.returncode == 6
    assert "HTTP 422" in result.stderr and "entries" in result.stderr


def test_split_onnx_is_uploaded_as_one_file(service, key, tmp_path):
    """torch.onnx.export's default writes model.onnx + model.onnx.data; the server takes one file, so the client
    inlines the side file before the upload (the server alone would refuse it)."""
    import onnx

    from tests.tiny_models import export_onnx, tiny_resnet
    single = export_onnx(tiny_resnet(), tmp_path / "single.onnx")
    onnx.save_model(onnx.load(single), tmp_path / "split.onnx", save_as_external_data=True,
                    location="split.onnx.data", size_threshold=0)
    result = run(["submit", str(tmp_path / "split.onnx"), "--no-compile", "--no-measure", *TINY],
                 server=service.url, key=key)
    assert result.returncode == 0, result.stderr
    assert "inlined into one .onnx" in result.stderr and "(onnx)" in result.stderr


def test_bad_key_exits_3(service, model_file):
    result = run(["submit", str(model_file)], server=service.url, key="zd_not-a-real-key")
    assert result.returncode == 3
    assert "authentication failed" in result.stderr and "invalid or revoked API key" in result.stderr


def test_missing_key_exits_3(service):
    result = run(["jobs"], server=service.url)
    assert result.returncode == 3 and "no API key" in result.stderr


def test_unreachable_server_exits_4(model_file):
    result = run(["submit", str(model_file)], server=f"http://127.0.0.1:{free_port()}", key="zd_x")
    assert result.returncode == 4
    assert "cannot reach the zerodata server" in result.stderr


def test_wait_timeout_exits_5(service, key, model_file):
    result = run(["submit", str(model_file), "--wait", "--wait-timeout", "0.5", "--no-compile", "--no-measure",
                  "--synthetic-steps", "100000", "--quiet"], server=service.url, key=key)
    assert result.returncode == 5 and "still" in result.stderr
    job_id = result.stderr.split("job ", 1)[1].split()[0]
    with service.client(key) as client:  # do not leave a long job on the shared worker
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def test_status_jobs_and_download(measured_job, service, key, tmp_path):
    jobs = run(["jobs", "--status", "succeeded"], server=service.url, key=key)
    assert jobs.returncode == 0, jobs.stderr
    job_id = jobs.stdout.splitlines()[1].split()[0]
    assert "succeeded" in jobs.stdout.splitlines()[1]
    status = run(["status", job_id, "--json"], server=service.url, key=key)
    assert json.loads(status.stdout)["status"] == "succeeded"
    one = run(["download", job_id, "--out", str(tmp_path), "--name", "report.html"], server=service.url, key=key)
    assert one.returncode == 0, one.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert "<svg" in (tmp_path / "report.html").read_text()
    missing = run(["download", job_id, "--name", "../../etc/passwd"], server=service.url, key=key)
    assert missing.returncode == 6 and "has no artifact" in missing.stderr


def test_unknown_job_is_404(service, key):
    result = run(["status", "does-not-exist"], server=service.url, key=key)
    assert result.returncode == 6 and "HTTP 404" in result.stderr


@pytest.fixture
def own_model_file(tmp_path) -> Path:
    """A model no other test uploads: erasing it cannot take the module's shared jobs along."""
    path = tmp_path / "own.pt2"
    path.write_bytes(tiny_pt2_bytes(seed=7))
    return path


def created_ids(stderr: str) -> tuple[str, str]:
    words = next(line for line in stderr.splitlines() if " created on model " in line).split()
    return words[1], words[5]


def test_submit_delete_after_leaves_nothing_on_the_server(service, key, own_model_file, tmp_path):
    result = run(["submit", str(own_model_file), "--wait", "--out", str(tmp_path / "out"), "--no-compile",
                  "--no-measure", "--delete-after", *TINY], server=service.url, key=key)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "report.json").is_file()
    job_id, model_id = created_ids(result.stderr)
    assert f"deleted model {model_id}" in result.stderr
    with service.client(key) as client:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert client.get(f"/v1/models/{model_id}").status_code == 404


def test_delete_command_erases_jobs_then_models(service, key, own_model_file, tmp_path):
    result = run(["submit", str(own_model_file), "--wait", "--out", str(tmp_path), "--no-compile", "--no-measure",
                  *TINY], server=service.url, key=key)
    assert result.returncode == 0, result.stderr
    job_id, model_id = created_ids(result.stderr)
    deleted = run(["delete", job_id], server=service.url, key=key)
    assert deleted.returncode == 0 and f"deleted job {job_id}" in deleted.stdout
    again = run(["delete", job_id], server=service.url, key=key)
    assert again.returncode == 6 and "job not found" in again.stderr
    assert run(["delete", "--model", model_id], server=service.url, key=key).returncode == 0
    with service.client(key) as client:
        assert client.get(f"/v1/models/{model_id}").status_code == 404


def test_gates_need_wait(model_file):
    result = run(["submit", str(model_file), "--min-speedup", "2"], server="http://127.0.0.1:1", key="k")
    assert result.returncode == 2 and "need --wait" in result.stderr


def test_help_documents_exit_codes():
    result = run(["submit", "--help"])
    assert "Exit codes" in result.stdout and "7 quality gate missed" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["submit", "/nonexistent/model.pt2"], "does not exist"),
    (["submit", "README.md", "--set", "garbage"], "expected KEY=VALUE"),
    (["submit", "README.md", "--min-agreement", "1.5", "--wait"], "1.5"),
    (["submit", "README.md", "--server", "ftp://example.com"], "must start with http"),
    (["submit", "README.md", "--delete-after"], "--delete-after needs --wait"),
    (["delete"], "Missing argument"),
])
def test_malformed_command_lines(args, message):
    result = run(args, key="k")
    assert result.returncode in (2, 6), result.stderr
    assert message in result.stderr
