"""The browser app in real Chromium against the real API + worker: sign in, upload, start a job,
watch progress, read the report, download the pruned model; and the refusals."""
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.app.helpers import tiny_pt2_bytes
from benchmarks.shared_assets import SHARED_MODELS

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
RESNET20 = SHARED_MODELS / "resnet20_cifar10.pt2"
SCREENSHOT_COPY = Path("/tmp/zerodata-report-page.png")  # outside the tree, to look at by hand


@pytest.fixture(scope="module")
def key(service):
    return service.create_key("browser-tests")


def wait_until(probe, timeout_s: float):
    """Poll from Python: the pages' CSP forbids the string evaluation wait_for_function uses."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not reached")


def sign_in(page, key):
    page.goto("/signin")
    page.fill("#api_key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_url("**/jobs")


def test_bad_key_shows_an_error(page, service):
    page.goto("/signin")
    page.fill("#api_key", "zd_wrong-key")
    page.click("#signin-form button[type=submit]")
    assert "not valid" in page.text_content("#signin-error")
    assert not [c for c in page.context.cookies() if c["name"] == "zd_key"]


def test_cookies_are_locked_down(page, key):
    sign_in(page, key)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["zd_key"]["httpOnly"] and cookies["zd_key"]["sameSite"] == "Strict"
    assert not cookies["zd_csrf"]["httpOnly"] and cookies["zd_csrf"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").count("zd_key") == 0  # JS cannot read the key


def test_requests_without_csrf_are_refused(page, key):
    sign_in(page, key)
    status = page.evaluate("""async () => (await fetch('/v1/jobs', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({model_id: 'x'})})).status""")
    assert status == 403
    wrong = page.evaluate("""async () => (await fetch('/v1/jobs', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'}, body: '{}'})).status""")
    assert wrong == 403
    upload = page.evaluate("""async () => { const f = new FormData(); f.append('file', new Blob(['x']), 'm.pt2');
        return (await fetch('/v1/models', {method: 'POST', credentials: 'same-origin', body: f})).status; }""")
    assert upload == 403
    signout = page.evaluate("""async () => (await fetch('/signout', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf_token=nope'})).status""")
    assert signout == 403


def test_sign_in_form_needs_its_csrf_token(page, service, key):
    page.goto("/signin")
    status = page.evaluate("""async (key) => (await fetch('/signin', {method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: 'api_key=' + encodeURIComponent(key)})).status""", key)
    assert status == 403


def test_pages_need_sign_in(page, service):
    page.goto("/jobs")
    assert page.url.endswith("/signin")


def test_upload_resnet20_shows_summary(page, key, tmp_path):
    sign_in(page, key)
    page.goto("/upload")
    page.set_input_files("#file-input", str(RESNET20))
    page.wait_for_selector("#model-summary:not([hidden])", timeout=60_000)
    assert page.text_content("#upload-text").startswith("uploaded")
    assert page.text_content("#m-format") == "pt2"
    assert page.text_content("#m-params").replace(",", "").isdigit()
    assert int(page.text_content("#m-layer-count")) >= 18
    assert "layer1.0.conv1" in page.text_content("#m-layers")
    assert page.text_content("#m-input").startswith("1 \u00d7 3 \u00d7 32 \u00d7 32") or page.text_content("#m-input")


def test_refused_upload_shows_the_reason(page, key, tmp_path):
    sign_in(page, key)
    junk = tmp_path / "not_a_model.pt2"
    junk.write_bytes(b"this is not a model" * 10)
    page.goto("/upload")
    page.set_input_files("#file-input", str(junk))
    page.wait_for_selector("#upload-error:not([hidden])")
    assert page.text_content("#upload-error").startswith("Upload refused:")
    assert page.locator("#model-summary").is_hidden()


def test_whole_flow_upload_job_progress_report_download(page, key, service, tmp_path):
    model = tmp_path / "tiny.pt2"
    model.write_bytes(tiny_pt2_bytes())
    sign_in(page, key)
    page.goto("/upload")
    page.set_input_files("#file-input", str(model))
    page.wait_for_selector("#model-summary:not([hidden])")
    page.click("#configure-link")
    page.wait_for_url("**/jobs/new?model_id=*")
    page.click("details summary")
    for name, value in {"synthetic_samples": "16", "synthetic_steps": "5", "recovery_steps": "5",
                        "fidelity_samples": "16", "admm_iterations": "5", "bench_runs": "3"}.items():
        page.fill(f"#f-{name}", value)
    page.uncheck("#f-tune")  # one kernel blocking: the compile is what makes this test slow
    page.click("#start-job")
    page.wait_for_url("**/jobs/*")
    job_id = page.get_attribute("#job", "data-job-id")
    # Live progress arrives over SSE: a stage name replaces the placeholder text while it runs.
    placeholders = ("", "waiting for a worker", "starting")
    wait_until(lambda: page.text_content("#job-stage") not in placeholders, 120)
    page.wait_for_selector("#report .zd-report", timeout=300_000)
    assert page.text_content("#job-status") == "succeeded"
    assert page.locator("#report svg.zd-chart").count() >= 5
    assert "Not measured" not in page.text_content("#report")
    names = page.eval_on_selector_all("[data-artifact]", "els => els.map(e => e.dataset.artifact)")
    assert {"model.pt2", "masks.safetensors", "sparse.zip", "report.json", "report.html"} <= set(names)
    with page.expect_download() as download_info:
        page.click("[data-artifact='model.pt2']")
    pruned = tmp_path / "model.pt2"
    download_info.value.save_as(pruned)
    import torch

    program = torch.export.load(str(pruned))
    out = program.module()(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    shot = tmp_path / "report-page.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, SCREENSHOT_COPY)
    # The list shows it with its numbers.
    page.goto("/jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    assert "succeeded" in row.text_content() and "\u00d7" in row.text_content()


def test_failed_job_shows_the_error_in_words(page, key, service):
    with service.client(key) as client:
        model = client.post("/v1/models", files={"file": ("tiny.pt2", tiny_pt2_bytes())}).json()
        job = client.post("/v1/jobs", json={"model_id": model["id"], "config": {
            "input_shape": [1, 5, 16, 16], "compile": False, "measure": False, "synthetic_steps": 1}}).json()
    sign_in(page, key)
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_selector("#failure:not([hidden])", timeout=120_000)
    assert page.text_content("#failure-title") == "This job failed"
    assert len(page.text_content("#job-error").strip()) > 10


def test_cancel_button(page, key, service):
    with service.client(key) as client:
        model = client.post("/v1/models", files={"file": ("tiny.pt2", tiny_pt2_bytes())}).json()
        job = client.post("/v1/jobs", json={"model_id": model["id"], "config": {
            "synthetic_steps": 100000, "compile": False, "measure": False}}).json()
    sign_in(page, key)
    page.goto(f"/jobs/{job['id']}")
    page.click("#cancel-job")
    page.wait_for_selector("#failure:not([hidden])", timeout=120_000)
    assert page.text_content("#failure-title") == "This job was canceled"


def test_delete_buttons_refuse_while_running_then_erase(page, key, service):
    with service.client(key) as client:  # its own model: the other tests' jobs must not block or lose it
        model = client.post("/v1/models", files={"file": ("own.pt2", tiny_pt2_bytes(seed=7))}).json()
        job = client.post("/v1/jobs", json={"model_id": model["id"], "config": {
            "synthetic_steps": 100000, "compile": False, "measure": False}}).json()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, key)
    page.goto(f"/jobs/{job['id']}")
    assert page.is_hidden("#delete-job")  # nothing to delete while the job runs
    page.click("#delete-model")
    page.wait_for_selector("#erase-error:not([hidden])")
    assert "cancel" in page.text_content("#erase-error")
    page.click("#cancel-job")
    page.wait_for_selector("#delete-job:not([hidden])", timeout=120_000)
    page.click("#delete-job")
    page.wait_for_url("**/jobs")
    with service.client(key) as client:
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.get(f"/v1/models/{model['id']}").status_code == 200
        other = client.post("/v1/jobs", json={"model_id": model["id"]}).json()
        client.post(f"/v1/jobs/{other['id']}/cancel")  # a worker may have claimed it already: wait until it stops
        wait_until(lambda: client.get(f"/v1/jobs/{other['id']}").json()["status"] == "canceled", 120)
    page.goto(f"/jobs/{other['id']}")
    page.click("#delete-model")
    page.wait_for_url("**/jobs")
    with service.client(key) as client:
        assert client.get(f"/v1/models/{model['id']}").status_code == 404
        assert client.get(f"/v1/jobs/{other['id']}").status_code == 404


def test_hostile_job_id_and_other_tenants_job_are_404(page, key, service):
    other = service.create_key("someone-else")
    with service.client(other) as client:
        model = client.post("/v1/models", files={"file": ("tiny.pt2", tiny_pt2_bytes())}).json()
        job = client.post("/v1/jobs", json={"model_id": model["id"], "config": {"compile": False, "measure": False,
                                                                                 "synthetic_steps": 1}}).json()
    sign_in(page, key)
    for path in (f"/jobs/{job['id']}", "/jobs/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/jobs/" + "a" * 5000,
                 f"/jobs/new?model_id={model['id']}"):
        response = page.goto(path)
        assert response.status == 404, path
        assert "<script>alert" not in page.content()
    assert page.request.get(f"/jobs/{job['id']}/report").status == 404


def test_job_form_shows_the_servers_validation_error(page, key, service):
    with service.client(key) as client:
        model = client.post("/v1/models", files={"file": ("tiny.pt2", tiny_pt2_bytes())}).json()
    sign_in(page, key)
    page.goto(f"/jobs/new?model_id={model['id']}")
    page.fill("#f-entries", "42")
    page.click("details summary")
    page.fill("#f-input_shape", "<script>alert(1)</script>")
    page.fill("#f-webhook", "http://169.254.169.254/latest/meta-data")
    page.evaluate("document.getElementById('job-form').noValidate = true")  # let the server judge
    page.click("#start-job")
    page.wait_for_selector("#job-error:not([hidden])")
    message = page.text_content("#job-error")
    assert message.startswith("The job was not started:") and "entries" in message
    assert "/jobs/new" in page.url


def test_expired_session_is_explained_on_upload(page, key, tmp_path):
    sign_in(page, key)
    page.goto("/upload")
    page.context.clear_cookies()
    model = tmp_path / "tiny.pt2"
    model.write_bytes(tiny_pt2_bytes())
    page.set_input_files("#file-input", str(model))
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "sign in again" in page.text_content("#upload-error")
