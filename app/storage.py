"""Where uploads and artifacts live: a local folder (`file:///path`) or an S3-compatible bucket
(`s3://bucket/prefix`, see `app.storage_s3`). Keys are relative POSIX paths chosen by the service,
never by users ("models/<tenant>/<sha256>", "jobs/<job id>/<artifact name>").
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

CHUNK = 1024 * 1024


class StorageError(Exception):
    """Storage misconfigured or an object missing."""


class Storage(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Store `source` under `key` (atomically: readers see the old object or the whole new one).
        `source` is consumed (moved or deleted)."""

    def replace_folder(self, prefix: str, folder: Path) -> list[str]:
        """Make the files directly in `folder` the only objects under `prefix/`; returns their names.
        A repeat (a job re-run after its worker was killed) replaces, never duplicates."""

    def local_path(self, key: str) -> Path | None:
        """The object's path when it is a local file (the API serves it with sendfile), else None."""

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's content in chunks, for streaming downloads."""

    @contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        """A local file with the object's content, for the worker (downloaded when remote)."""

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


def job_prefix(job_id: str) -> str:
    """Where a job's artifacts live: every object under it belongs to that job."""
    return f"jobs/{job_id}"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key: {key!r}")
    return key


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / ".staging"
        self._staging.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _stage(self, source: Path) -> Path:
        """Move `source` next to its destination first so the final step is one same-filesystem rename."""
        staged = self._staging / uuid.uuid4().hex
        shutil.move(str(source), staged)
        return staged

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._stage(Path(source)), target)

    def replace_folder(self, prefix: str, folder: Path) -> list[str]:
        target = self._path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = self._stage(Path(folder))
        names = sorted(p.name for p in staged.iterdir() if p.is_file())
        if target.exists():
            # Two renames: the old set leaves as a whole, the new set arrives as a whole.
            old = self._staging / f"old-{uuid.uuid4().hex}"
            os.replace(target, old)
            os.replace(staged, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, target)
        return names

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"missing object: {key}")
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    @contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"missing object: {key}")
        yield path

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


def storage_from_url(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file storage URL must be file:///absolute/path, got {url!r}")
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from app.storage_s3 import S3Storage

        return S3Storage(bucket=parsed.netloc, prefix=parsed.path.strip("/"), endpoint_url=endpoint_url, region=region)
    raise StorageError(f"unsupported STORAGE_URL {url!r}: use file:///path or s3://bucket/prefix")


def get_storage() -> Storage:
    from app.config import get_settings

    settings = get_settings()
    return _cached_storage(settings.effective_storage_url, settings.s3_endpoint_url, settings.s3_region)


_storages: dict[tuple, Storage] = {}


def _cached_storage(url: str, endpoint: str | None, region: str | None) -> Storage:
    key = (url, endpoint, region)
    if key not in _storages:
        _storages[key] = storage_from_url(url, endpoint_url=endpoint, region=region)
    return _storages[key]
