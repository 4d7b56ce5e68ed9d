"""A finished job calls its webhook: an HMAC-signed POST the receiver can verify."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.service_client import TINY_CONFIG, upload_tiny, wait_terminal
from tests.service_harness import WEBHOOK_SECRET
from worker.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver():
    calls: list[tuple[dict, bytes]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", calls, arrived
    server.shutdown()


def test_finished_job_posts_signed_webhook(running_service, receiver):
    url, calls, arrived = receiver
    key = running_service.create_key("e2e-webhook")
    with running_service.client(key) as client:
        model = upload_tiny(client)
        response = client.post("/v1/jobs", json={"model_id": model["id"], "config": TINY_CONFIG, "webhook_url": url})
        assert response.status_code == 201, response.text
        job = response.json()
        final = wait_terminal(client, job["id"])
        assert final["status"] == "succeeded", (final, running_service.worker_logs())
    assert arrived.wait(30), running_service.worker_logs()
    headers, body = calls[0]
    assert verify_signature(body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], WEBHOOK_SECRET)
    assert not verify_signature(body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], WEBHOOK_SECRET)
    payload = json.loads(body)
    assert payload["job_id"] == job["id"] and payload["status"] == "succeeded" and payload["event"] == "job.finished"
