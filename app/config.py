"""One `Settings` object read from the environment; `get_settings()` caches it and tests replace it.

Embedded defaults (no environment at all) put everything under `.zerodata/` (or `ZERODATA_HOME`):
a SQLite file, a local artifact folder and a filesystem broker, so `zerodata serve` needs no server.
Production sets `DATABASE_URL`, `BROKER_URL`, `STORAGE_URL` (and S3 endpoint variables).
"""
from __future__ import annotations

import functools
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    """Accept both the bare production name (DATABASE_URL) and the prefixed one (ZERODATA_DATABASE_URL)."""
    return AliasChoices(name, f"ZERODATA_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZERODATA_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(".zerodata"), validation_alias="ZERODATA_HOME")  # never $HOME
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    broker_url: str | None = Field(default=None, validation_alias=_env("BROKER_URL"))
    storage_url: str | None = Field(default=None, validation_alias=_env("STORAGE_URL"))
    # S3-compatible storage (MinIO, R2, ...): endpoint and credentials; boto3 also reads AWS_* itself.
    s3_endpoint_url: str | None = Field(default=None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_region: str | None = Field(default=None, validation_alias=_env("S3_REGION"))

    public_url: str | None = None  # how users reach the API; used in messages and webhooks
    # Redis keys are prefixed so several deployments (or test sessions) can share one server.
    broker_key_prefix: str = ""

    max_upload_bytes: int = 512 * 1024 * 1024
    # Celery: soft/hard limits must stay below the broker's visibility timeout, or Redis would
    # hand a still-running job to a second worker.
    task_soft_time_limit_s: int = 3 * 3600
    task_hard_time_limit_s: int = 3 * 3600 + 300
    broker_visibility_timeout_s: int = 4 * 3600
    max_attempts: int = 3  # a job whose worker died this many times is poison: failed, not retried
    worker_memory_limit_mb: int = 16 * 1024  # RLIMIT_AS of the process that loads the model; 0 = none
    # The worker's cache (synthetic inputs, kernel builds) is trimmed to this many bytes after each job, least
    # recently used files first; 0 = no cap.
    cache_max_bytes: int = 20 * 1024 ** 3
    # Liveness: a running job's worker touches its row every `heartbeat_interval_s`; a running job
    # silent for `stale_after_s` lost its worker and is re-queued by the sweep.
    heartbeat_interval_s: float = 10.0
    stale_after_s: float = 120.0
    sweep_interval_s: float = 30.0
    requeue_queued_after_s: float = 600.0  # a queued job this old may have lost its message
    sse_poll_interval_s: float = 0.5
    progress_write_interval_s: float = 0.5

    # Webhooks (the surfaces' policy reads these): hosts a job may call back, and the HMAC secret.
    # Comma separated; empty disables webhooks (see app/webhook_policy.py).
    webhook_allowed_hosts: str = Field(default="", validation_alias=_env("WEBHOOK_ALLOWED_HOSTS"))
    webhook_secret: str | None = Field(default=None, validation_alias=_env("WEBHOOK_SECRET"))

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'zerodata.db'}"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or (self.home_dir / "storage").as_uri()

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Where the serverless filesystem broker keeps its message files."""
        return self.home_dir / "broker"

    @property
    def work_dir(self) -> Path:
        """Scratch space for uploads in flight and pipeline output before it moves into storage."""
        return self.home_dir / "work"

    @property
    def cache_dir(self) -> Path:
        return self.home_dir / "cache"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
