"""Deliver a job's completion webhook: an HMAC-signed JSON POST, retried with backoff.

Receivers verify `X-Zerodata-Signature: sha256=<hex>`, the HMAC-SHA256 (key: the shared secret)
of `<X-Zerodata-Timestamp>.<raw body>`, and reject stale timestamps (see `verify_signature`).
The URL is re-checked against the operator's allow-list right before sending (the list may have
changed since the job was created), redirects are never followed, and hosts admitted only by a
wildcard must not resolve to a private address.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import httpx

from app.webhook_policy import allowed_host_entries, host_matches, ip_literal, is_public_address, validate_webhook_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Zerodata-Signature"
TIMESTAMP_HEADER = "X-Zerodata-Timestamp"
EVENT_HEADER = "X-Zerodata-Event"
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def sign(body: bytes, timestamp: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, timestamp: str, signature: str, secret: str, *,
                     tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver runs: constant-time compare, and the timestamp must be recent (no replays)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(body, timestamp, secret), signature or "")


def check_resolved_addresses(url: str, settings) -> None:
    """A host admitted only by a wildcard must not resolve into the internal network."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if ip_literal(host) is not None or host_matches(host, allowed_host_entries(settings)) == "exact":
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"webhook host {host} does not resolve: {exc}") from None
    for info in infos:
        address = ip_literal(info[4][0].split("%")[0])
        if address is None or not is_public_address(address):
            raise ValueError(f"webhook host {host} resolves to non-public address {info[4][0]}")


def deliver_job_webhook(url: str, payload: dict, secret: str, *, attempts: int = 5, timeout: float = 10.0,
                        backoff_s: float = 1.0, settings=None) -> bool:
    """POST `payload` as JSON to `url`; True once the receiver answers 2xx.

    Retries (up to `attempts` in all, waiting backoff_s, 2*backoff_s, ...) on timeouts, connection
    errors and 408/425/429/5xx; gives up at once on other answers and on a URL the policy refuses.
    Never raises for delivery problems: a webhook must not fail the job it reports on.
    """
    if settings is None:
        from app.config import get_settings  # worker -> app settings is allowed; imported late for tests
        settings = get_settings()
    try:
        validate_webhook_url(url, settings)
        check_resolved_addresses(url, settings)
    except ValueError as exc:
        log.warning("webhook not sent: %s", exc)
        return False
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    event = str(payload.get("event", "job.finished"))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for attempt in range(1, max(1, attempts) + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "User-Agent": "zerodata-webhook/1",
                       TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(body, timestamp, secret),
                       EVENT_HEADER: event}
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.info("webhook attempt %d to %s failed: %s", attempt, url, exc)
            else:
                if 200 <= response.status_code < 300:
                    return True
                if response.status_code not in RETRY_STATUSES:
                    log.warning("webhook to %s refused with HTTP %d; not retrying", url, response.status_code)
                    return False
                log.info("webhook attempt %d to %s got HTTP %d", attempt, url, response.status_code)
            if attempt < attempts:
                time.sleep(backoff_s * 2 ** (attempt - 1))
    log.warning("webhook to %s gave up after %d attempts", url, attempts)
    return False
