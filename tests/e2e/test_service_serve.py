"""`zerodata serve` on embedded defaults (SQLite, local folder, filesystem broker, its own worker)."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
import zipfile

import httpx
import pytest

from tests.e2e.service_client import TINY_CONFIG, create_job, upload_tiny, wait_terminal
from tests.service_harness import ROOT, ZERODATA, free_port, kill_group, wait_http

pytestmark = pytest.mark.e2e


def test_serve_embedded_runs_a_job_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL") and not k.startswith("ZERODATA_")}
    env.update(ZERODATA_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               ZERODATA_SWEEP_INTERVAL_S="1")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([ZERODATA, "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=90, process=process)
        key = None
        for _ in range(50):
            match = re.search(r"API key for tenant 'local': (zd_\S+)", log.read_text())
            if match:
                key = match.group(1)
                break
            time.sleep(0.2)
        assert key, log.read_text()
        assert url in log.read_text()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            model = upload_tiny(client)
            # The user's path in full: compile the sparse package too (with the worker's rlimits in force).
            job = create_job(client, model["id"], {**TINY_CONFIG, "compile": True})
            final = wait_terminal(client, job["id"], timeout=400)
            assert final["status"] == "succeeded", (final, log.read_text()[-5000:])
            assert client.get(f"/v1/jobs/{job['id']}/artifacts/report.json").status_code == 200
            package = client.get(f"/v1/jobs/{job['id']}/artifacts/sparse.zip")
            assert package.status_code == 200
            with zipfile.ZipFile(io.BytesIO(package.content)) as archive:
                assert any(name.endswith("manifest.json") for name in archive.namelist())
            # What the worker cached from the model (inverted inputs, kernel builds embedding its weights) goes
            # with it: the worker's next sweep removes the model's cache folder.
            home = tmp_path / "home"
            assert (home / "storage" / "jobs" / job["id"]).is_dir()
            model_cache = home / "cache" / "models" / model["id"]
            assert (model_cache / "synthetic").is_dir() and (model_cache / "kernels").is_dir()
            assert client.delete(f"/v1/models/{model['id']}").status_code == 204
            deadline = time.monotonic() + 30
            while model_cache.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not model_cache.exists(), log.read_text()[-3000:]
        assert (home / "zerodata.db").is_file() and not (home / "storage" / "jobs" / job["id"]).exists()
        assert not (ROOT / ".zerodata" / "storage" / "jobs" / job["id"]).exists()  # nothing leaked into the tree
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
        assert _group_gone(process.pid, timeout=30), "serve left its worker running"
    finally:
        kill_group(process)


def _group_gone(pgid: int, timeout: float) -> bool:
    """True once no process of serve's session (API, worker, its children) is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
