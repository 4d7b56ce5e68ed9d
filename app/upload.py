"""Receive a multipart upload as a stream: the file part goes straight to a temp file, hashed on the
way, and the transfer stops the moment it passes the size cap. Nothing is held whole in memory."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # small form fields (csrf_token); a file part needs no more
FORM_OVERHEAD = 1024 * 1024  # headers and boundaries on top of the file itself


class UploadError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass
class ReceivedUpload:
    path: Path
    sha256: str
    size_bytes: int
    filename: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _too_large(max_bytes: int) -> UploadError:
    return UploadError(413, f"upload too large: the limit is {max_bytes} bytes ({max_bytes / 2**20:.0f} MiB)")


class _PartCollector:
    """Parser callbacks: one file part into `handle`, small text fields into `fields`."""

    def __init__(self, handle, max_bytes: int):
        self.handle, self.max_bytes = handle, max_bytes
        self.hasher = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self.field_bytes = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._target: str | None = None  # "file", "field:<name>" or None (ignored part)
        self._buffer = bytearray()

    def callbacks(self) -> dict:
        return dict(on_part_begin=self._part_begin, on_header_field=self._header_field,
                    on_header_value=self._header_value_cb, on_header_end=self._header_end,
                    on_headers_finished=self._headers_finished, on_part_data=self._part_data,
                    on_part_end=self._part_end)

    def _part_begin(self):
        self._headers, self._target, self._buffer = {}, None, bytearray()

    def _header_field(self, data, start, end):
        self._header_name += data[start:end]

    def _header_value_cb(self, data, start, end):
        self._header_value += data[start:end]

    def _header_end(self):
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self):
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == FILE_FIELD:
            if self.filename is not None:
                raise UploadError(400, f"send exactly one '{FILE_FIELD}' part")
            self.filename = (filename or b"upload").decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
            self._target = "file"
        elif filename is None and name:
            self._target = f"field:{name}"

    def _part_data(self, data, start, end):
        chunk = data[start:end]
        if self._target == "file":
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise _too_large(self.max_bytes)
            self.hasher.update(chunk)
            self.handle.write(chunk)
        elif self._target is not None:
            self.field_bytes += len(chunk)
            if self.field_bytes > MAX_FIELD_BYTES:
                raise UploadError(413, "form fields too large")
            self._buffer += chunk

    def _part_end(self):
        if self._target and self._target.startswith("field:"):
            self.fields[self._target[6:]] = self._buffer.decode("utf-8", "replace")


async def receive_upload(request: Request, *, work_dir: Path, max_bytes: int) -> ReceivedUpload:
    """Stream the request's multipart body; raises UploadError (4xx) and leaves no file behind on failure."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(400, f"send the model as multipart/form-data with a '{FILE_FIELD}' field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise _too_large(max_bytes)
    work_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=work_dir, prefix="upload-", delete=False)
    path = Path(handle.name)
    collector = _PartCollector(handle, max_bytes)
    parser = MultipartParser(options[b"boundary"], collector.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD:
                raise _too_large(max_bytes)
            await anyio.to_thread.run_sync(parser.write, chunk)
        parser.finalize()
        handle.close()
        if collector.filename is None:
            raise UploadError(400, f"missing '{FILE_FIELD}' field: send the model as multipart field '{FILE_FIELD}'")
        if collector.size == 0:
            raise UploadError(400, "the uploaded file is empty")
    except MultipartParseError as exc:
        handle.close()
        path.unlink(missing_ok=True)
        raise UploadError(400, f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        handle.close()
        path.unlink(missing_ok=True)
        raise UploadError(400, "client disconnected during upload") from None
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    return ReceivedUpload(path, collector.hasher.hexdigest(), collector.size, collector.filename, collector.fields)
