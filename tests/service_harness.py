"""Start the real service for tests: a fresh PostgreSQL database, a Redis key prefix, a uvicorn
subprocess and Celery worker subprocesses, all sharing one environment. Used by tests/conftest.py."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("ZERODATA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ZERODATA_TEST_REDIS", "redis://127.0.0.1:6379/13")
PYTHON = sys.executable
WEBHOOK_SECRET = "test-webhook-secret"
ZERODATA = str(Path(sys.executable).parent / "zerodata")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database() -> tuple[str, str]:
    """A fresh database on the shared server: (name, SQLAlchemy URL)."""
    import psycopg

    name = f"zd_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def service_env(*, database_url: str, home: Path, redis_url: str, redis_prefix: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "BROKER_URL": redis_url, "ZERODATA_BROKER_KEY_PREFIX": redis_prefix,
        "STORAGE_URL": (home / "storage").as_uri(), "ZERODATA_HOME": str(home),
        # Fast failure detection so the kill/re-queue tests finish in seconds.
        "ZERODATA_HEARTBEAT_INTERVAL_S": "0.5", "ZERODATA_STALE_AFTER_S": "4", "ZERODATA_SWEEP_INTERVAL_S": "1",
        "ZERODATA_TASK_SOFT_TIME_LIMIT_S": "300", "ZERODATA_TASK_HARD_TIME_LIMIT_S": "320",
        "ZERODATA_BROKER_VISIBILITY_TIMEOUT_S": "400", "ZERODATA_SSE_POLL_INTERVAL_S": "0.2",
        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        # Webhooks may reach a receiver the tests run on loopback (listed exactly, as an operator would).
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_SECRET": WEBHOOK_SECRET,
    })
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process and every child it started (it runs in its own session)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class RunningService:
    url: str
    env: dict
    home: Path
    api: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen:
        log = open(self.home / f"worker-{len(self.workers)}.log", "wb")
        command = [PYTHON, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "cpu,gpu",
                   "--concurrency", "1", "--loglevel", "INFO", "-n", f"test{len(self.workers)}-{uuid.uuid4().hex[:6]}@%h",
                   "--without-mingle", "--without-gossip"]
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.workers.append(process)
        self._wait_ready(process, self.home / f"worker-{len(self.workers) - 1}.log")
        return process

    @staticmethod
    def _wait_ready(process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
        """Celery logs '<name> ready.' once it consumes; fail loudly (with its log) if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in log.read_text(errors="replace"):
                return
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        state = Path(f"/proc/{process.pid}/status").read_text() if Path(f"/proc/{process.pid}").exists() else ""
        raise TimeoutError(f"worker not ready after {timeout} s; log:\n{log.read_text(errors='replace')}\n{state}")

    def create_key(self, tenant: str) -> str:
        out = subprocess.run([ZERODATA, "keys", "create", "--tenant", tenant], cwd=ROOT,
                             env=self.env, capture_output=True, text=True, timeout=120, check=True)
        return out.stdout.strip().splitlines()[-1]

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.home.glob("worker-*.log")))

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            kill_group(process, signal.SIGTERM)


def start_service(*, database_url: str, home: Path, redis_url: str, redis_prefix: str, workers: int = 1,
                  **extra: str) -> RunningService:
    from app.migrate import upgrade_database

    upgrade_database(database_url)
    env = service_env(database_url=database_url, home=home, redis_url=redis_url, redis_prefix=redis_prefix, **extra)
    port = free_port()
    api_log = open(home / "api.log", "wb")
    api = subprocess.Popen([PYTHON, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                            "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                           stdout=api_log, stderr=subprocess.STDOUT, start_new_session=True)
    service = RunningService(url=f"http://127.0.0.1:{port}", env=env, home=home, api=api)
    try:
        wait_http(f"{service.url}/healthz", process=api)
        for _ in range(workers):
            service.start_worker()
    except BaseException:
        service.stop()
        raise
    return service
