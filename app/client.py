"""A small HTTP client for the zerodata REST API (used by `zerodata submit/status/download/jobs`).

Every failure becomes a `ClientError` subclass with a message meant for a person and an exit code
for CI scripts; nothing here prints.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import httpx

EXIT_JOB_FAILED = 1  # the job failed or was canceled
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_AUTH = 3  # 401/403: missing, wrong or revoked API key
EXIT_UNREACHABLE = 4  # no server at the URL
EXIT_TIMEOUT = 5  # the server or the job took longer than allowed
EXIT_REFUSED = 6  # the server refused the request (bad model, bad option, not found, server error)
EXIT_GATE = 7  # the job succeeded but missed a --min-speedup / --min-agreement / --max-size-mb gate
TERMINAL = {"succeeded", "failed", "canceled"}


class ClientError(Exception):
    exit_code = EXIT_REFUSED


class AuthError(ClientError):
    exit_code = EXIT_AUTH


class UnreachableError(ClientError):
    exit_code = EXIT_UNREACHABLE


class ClientTimeout(ClientError):
    exit_code = EXIT_TIMEOUT


class RefusedError(ClientError):
    exit_code = EXIT_REFUSED

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase
    if isinstance(detail, list):  # pydantic validation errors
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail[:5])
    return str(detail)


class ProgressReader:
    """Wraps an open file so the upload reports bytes sent."""

    def __init__(self, handle, on_bytes: Callable[[int], None] | None):
        self.handle, self.on_bytes = handle, on_bytes

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        if chunk and self.on_bytes:
            self.on_bytes(len(chunk))
        return chunk

    def fileno(self) -> int:  # lets httpx send a Content-Length instead of chunked encoding
        return self.handle.fileno()

    def seek(self, *args) -> int:
        return self.handle.seek(*args)

    def __iter__(self):
        while chunk := self.read(256 * 1024):
            yield chunk


class ZerodataClient:
    def __init__(self, server: str, api_key: str | None, *, timeout: float = 60.0):
        if not server:
            raise ClientError("no server URL: pass --server URL or set ZERODATA_URL")
        if not server.startswith(("http://", "https://")):
            raise ClientError(f"server URL must start with http:// or https://, got {server!r}")
        if not api_key:
            raise AuthError("no API key: pass --api-key KEY or set ZERODATA_API_KEY (create one with `zerodata keys create`)")
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, timeout=timeout, trust_env=True,
                                 headers={"Authorization": f"Bearer {api_key}", "User-Agent": "zerodata-cli/0.1"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientTimeout(f"{self.server} did not answer in time ({method} {path})") from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"cannot reach the zerodata server at {self.server}: {exc}") from None
        return self.check(response)

    @staticmethod
    def check(response: httpx.Response) -> httpx.Response:
        if response.status_code == 401:
            raise AuthError(f"authentication failed: {_detail(response)} (check --api-key / ZERODATA_API_KEY)")
        if response.status_code == 403:
            raise AuthError(f"not allowed: {_detail(response)}")
        if response.status_code >= 400:
            raise RefusedError(f"server refused the request (HTTP {response.status_code}): {_detail(response)}",
                               response.status_code)
        return response

    def upload_model(self, path: Path, on_bytes: Callable[[int], None] | None = None) -> dict:
        path = Path(path)
        if not path.is_file():
            raise ClientError(f"model file not found: {path}")
        with path.open("rb") as handle:
            files = {"file": (path.name, ProgressReader(handle, on_bytes), "application/octet-stream")}
            return self.request("POST", "/v1/models", files=files).json()

    def create_job(self, model_id: str, config: dict, webhook_url: str | None = None) -> dict:
        body = {"model_id": model_id, "config": config}
        if webhook_url:
            body["webhook_url"] = webhook_url
        return self.request("POST", "/v1/jobs", json=body).json()

    def get_job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{quote(job_id, safe='')}").json()

    def list_jobs(self, *, offset: int = 0, limit: int = 20, status: str | None = None) -> dict:
        params = {"offset": offset, "limit": limit, **({"status": status} if status else {})}
        return self.request("GET", "/v1/jobs", params=params).json()

    def delete_job(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{quote(job_id, safe='')}")

    def delete_model(self, model_id: str) -> None:
        """Erases the model and every job run on it; RefusedError 409 while one of them is queued or running."""
        self.request("DELETE", f"/v1/models/{quote(model_id, safe='')}")

    def list_artifacts(self, job_id: str) -> list[dict]:
        return self.request("GET", f"/v1/jobs/{quote(job_id, safe='')}/artifacts").json()["data"]

    def download_artifact(self, job_id: str, name: str, out_dir: Path) -> Path:
        """Streams to `<out_dir>/<name>.part`, then renames: a half-download never looks finished."""
        safe_name = Path(name).name
        if not safe_name or safe_name in (".", "..") or safe_name != name:
            raise ClientError(f"server sent an unsafe artifact name {name!r}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        target, partial = out_dir / safe_name, out_dir / f".{safe_name}.part"
        url = f"/v1/jobs/{quote(job_id, safe='')}/artifacts/{quote(name, safe='')}"
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    self.check(response)
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
        except httpx.TimeoutException:
            partial.unlink(missing_ok=True)
            raise ClientTimeout(f"download of {name} from {self.server} timed out") from None
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise UnreachableError(f"download of {name} from {self.server} failed: {exc}") from None
        os.replace(partial, target)
        return target

    def wait_for_job(self, job_id: str, *, on_update: Callable[[dict], None] | None = None,
                     poll_s: float = 1.0, timeout_s: float | None = None) -> dict:
        """Polls until the job ends (simple and proxy-proof; the browser uses SSE)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ClientTimeout(f"job {job_id} still {job['status']} after {timeout_s:.0f} s "
                                    f"(it keeps running on the server; `zerodata status {job_id}`)")
            time.sleep(poll_s)
