"""S3-compatible storage (AWS S3, MinIO, R2, ...) through boto3: `STORAGE_URL=s3://bucket/prefix`,
`ZERODATA_S3_ENDPOINT_URL` for non-AWS endpoints, credentials from the usual AWS_* variables.

Each object PUT is atomic; a folder replacement uploads the new set (overwriting same names) and then
deletes every other object under the prefix, so a re-run never leaves two sets behind."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.storage import CHUNK, StorageError, _check_key


class S3Storage:
    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None):
        if not bucket:
            raise StorageError("S3 storage URL needs a bucket: s3://bucket/prefix")
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _full(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, exc, key: str) -> StorageError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"missing object: {key}")
        return StorageError(f"S3 error for {key}: {exc}")

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._full(key))
        Path(source).unlink(missing_ok=True)

    def replace_folder(self, prefix: str, folder: Path) -> list[str]:
        folder = Path(folder)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        for name in names:
            self.client.upload_file(str(folder / name), self.bucket, self._full(f"{prefix}/{name}"))
        keep = {self._full(f"{prefix}/{name}") for name in names}
        stale = [key for key in self._list(self._full(prefix) + "/") if key not in keep]
        for start in range(0, len(stale), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": key} for key in stale[start:start + 1000]], "Quiet": True})
        shutil.rmtree(folder, ignore_errors=True)
        return names

    def _list(self, full_prefix: str) -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def local_path(self, key: str) -> Path | None:
        return None

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except ClientError as exc:
            raise self._missing(exc, key) from None
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    @contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        from botocore.exceptions import ClientError

        handle, name = tempfile.mkstemp(prefix="zerodata-s3-")
        os.close(handle)
        try:
            try:
                self.client.download_file(self.bucket, self._full(key), name)
            except ClientError as exc:
                raise self._missing(exc, key) from None
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        full = self._full(key)
        for stale in [full, *self._list(full + "/")]:
            self.client.delete_object(Bucket=self.bucket, Key=stale)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError:
            return bool(self._list(self._full(key) + "/"))
