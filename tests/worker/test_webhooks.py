"""Webhook delivery against a real HTTP server on 127.0.0.1: signature, retries, refusals."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from worker.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, deliver_job_webhook, sign, verify_signature

SECRET = "s3cret"


class Receiver:
    """Answers each POST with the next status in `statuses` (the last one repeats) and records it."""

    def __init__(self, statuses, delay_s=0.0):
        self.statuses, self.delay_s, self.requests = list(statuses), delay_s, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers), body))
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://10.0.0.1/")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(statuses, delay_s=0.0):
        made.append(Receiver(statuses, delay_s))
        return made[-1]
    yield make
    for r in made:
        r.close()


ALLOW_LOCAL = SimpleNamespace(webhook_allowed_hosts="127.0.0.1")
PAYLOAD = {"event": "job.finished", "job_id": "j1", "status": "succeeded"}


def test_signature_is_verifiable(receiver_factory):
    r = receiver_factory([200])
    assert deliver_job_webhook(r.url, PAYLOAD, SECRET, settings=ALLOW_LOCAL, backoff_s=0)
    headers, body = r.requests[0]
    assert json.loads(body) == PAYLOAD
    assert verify_signature(body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], SECRET)
    assert not verify_signature(body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], "wrong")
    assert not verify_signature(body + b" ", headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], SECRET)
    assert headers[SIGNATURE_HEADER].startswith("sha256=")


def test_stale_or_garbled_timestamp_fails_verification():
    body = b"{}"
    old = str(int(time.time()) - 3600)
    assert not verify_signature(body, old, sign(body, old, SECRET), SECRET)
    assert not verify_signature(body, "not-a-number", sign(body, "x", SECRET), SECRET)


def test_retries_on_5xx_then_succeeds(receiver_factory):
    r = receiver_factory([503, 500, 200])
    assert deliver_job_webhook(r.url, PAYLOAD, SECRET, settings=ALLOW_LOCAL, backoff_s=0.01)
    assert len(r.requests) == 3


def test_gives_up_after_attempts(receiver_factory):
    r = receiver_factory([502])
    assert not deliver_job_webhook(r.url, PAYLOAD, SECRET, attempts=3, settings=ALLOW_LOCAL, backoff_s=0.01)
    assert len(r.requests) == 3


def test_4xx_is_not_retried(receiver_factory):
    r = receiver_factory([400])
    assert not deliver_job_webhook(r.url, PAYLOAD, SECRET, settings=ALLOW_LOCAL, backoff_s=0.01)
    assert len(r.requests) == 1


def test_redirect_is_not_followed(receiver_factory):
    r = receiver_factory([302])
    assert not deliver_job_webhook(r.url, PAYLOAD, SECRET, settings=ALLOW_LOCAL, backoff_s=0.01)
    assert len(r.requests) == 1


def test_timeout_is_retried(receiver_factory):
    r = receiver_factory([200], delay_s=0.5)
    assert not deliver_job_webhook(r.url, PAYLOAD, SECRET, attempts=2, timeout=0.1, settings=ALLOW_LOCAL,
                                   backoff_s=0.01)
    assert len(r.requests) == 2


def test_refused_hosts_get_no_request(receiver_factory):
    r = receiver_factory([200])
    for policy in ("", "*", "ci.example.com", "*.example.com"):
        assert not deliver_job_webhook(r.url, PAYLOAD, SECRET, settings=SimpleNamespace(webhook_allowed_hosts=policy))
    assert r.requests == []


def test_wildcard_host_resolving_to_loopback_is_refused(receiver_factory):
    r = receiver_factory([200])
    url = r.url.replace("127.0.0.1", "localhost")
    assert not deliver_job_webhook(url, PAYLOAD, SECRET, settings=SimpleNamespace(webhook_allowed_hosts="*"))
    assert r.requests == []
    # Listed by exact name, the operator has vouched for it.
    assert deliver_job_webhook(url, PAYLOAD, SECRET, settings=SimpleNamespace(webhook_allowed_hosts="localhost"))
