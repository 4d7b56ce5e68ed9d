"""Zip container checks: entry count, bombs, names, links, encryption, nested archives.

Every member is decompressed once as a stream (CRC checked by zipfile) so the checks cover what
the data really expands to, not only what the headers declare.
"""
from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Callable

from worker.engine.safety.errors import CorruptArchiveError, ModelTooLargeError, UnsafeModelError

GiB = 1 << 30
MiB = 1 << 20
_CHUNK = 1 << 20
_STORED_OR_DEFLATED = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
# A data descriptor may follow a member's data: 12/16 bytes (with signature), 20/24 for zip64.
_DESCRIPTOR_SIZES = {12, 16, 20, 24}
_ENCRYPTED_FLAGS = 0x1 | 0x40  # traditional PKWARE encryption | strong encryption
# What zipfile raises on damaged data (zlib.error for a broken deflate stream, NotImplementedError
# for an unknown "version needed" field, ...).
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, zlib.error, OverflowError)


@dataclass
class ArchiveLimits:
    max_members: int = 10_000
    max_total_uncompressed: int = 4 * GiB
    # Expansion ratio (uncompressed / compressed) per member and for the whole archive; only
    # checked above `ratio_floor_bytes`, since tiny members compress well without being bombs.
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 * MiB
    max_name_length: int = 1024
    # Members the checks read whole into memory (pickles, JSON graphs, nested torch.save archives).
    max_inline_member_bytes: int = 256 * MiB


# Magic numbers of archive formats; long enough that raw tensor bytes do not match by chance.
def _nested_archive_kind(head: bytes) -> str | None:
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:3] == b"\x1f\x8b\x08" and len(head) > 3 and head[3] & 0xE0 == 0:
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:6] == b"Rar!\x1a\x07":
        return "rar"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    return None


def open_zip(source: str | IO[bytes], label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except READ_ERRORS as exc:
        raise CorruptArchiveError(f"{label}: not a readable zip archive (truncated or corrupt): {exc}") from None


def _check_name(name: str, label: str, limits: ArchiveLimits) -> None:
    if len(name) > limits.max_name_length:
        raise UnsafeModelError(f"{label}: member name longer than {limits.max_name_length} characters refused")
    if "\x00" in name or "\\" in name:
        raise UnsafeModelError(f"{label}: member name {name!r} contains a NUL or backslash; refused")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeModelError(f"{label}: member {name!r} has an absolute path; refused")
    if ".." in PurePosixPath(name).parts:
        raise UnsafeModelError(f"{label}: member {name!r} climbs out of the archive with '..'; refused")


def _check_entry(info: zipfile.ZipInfo, label: str, limits: ArchiveLimits) -> None:
    _check_name(info.filename, label, limits)
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # Unix attributes are meaningful
        if stat.S_ISLNK(mode):
            raise UnsafeModelError(f"{label}: member {info.filename!r} is a symbolic link; links are refused")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits: a plain file
            raise UnsafeModelError(f"{label}: member {info.filename!r} is a special file (mode {oct(mode)}); refused")
    if info.flag_bits & _ENCRYPTED_FLAGS:
        raise UnsafeModelError(f"{label}: member {info.filename!r} is encrypted; encrypted archives are refused")
    if info.compress_type not in _STORED_OR_DEFLATED:
        raise UnsafeModelError(
            f"{label}: member {info.filename!r} uses compression method {info.compress_type}; "
            "only stored and deflate are accepted")
    if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise ModelTooLargeError(
            f"{label}: member {info.filename!r} declares {info.file_size} bytes from {info.compress_size} compressed "
            f"(ratio above {limits.max_ratio:g}): refused as a zip bomb")


def _check_layout(infos: list[zipfile.ZipInfo], label: str, limits: ArchiveLimits, archive_bytes: int) -> None:
    if len(infos) > limits.max_members:
        raise UnsafeModelError(f"{label}: {len(infos)} entries, more than the limit of {limits.max_members}")
    seen: set[str] = set()
    for info in infos:
        key = info.filename.rstrip("/")
        if key in seen:
            raise UnsafeModelError(f"{label}: member {info.filename!r} appears twice; duplicate names are refused")
        seen.add(key)
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_uncompressed:
        raise ModelTooLargeError(
            f"{label}: expands to {declared} bytes, more than the limit of {limits.max_total_uncompressed}")
    if declared > limits.ratio_floor_bytes and declared > limits.max_ratio * max(archive_bytes, 1):
        raise ModelTooLargeError(
            f"{label}: {archive_bytes} bytes expand to {declared} (ratio above {limits.max_ratio:g}): refused as a zip bomb")
    # Overlapping entries (several names sharing one compressed stream) are the classic
    # non-recursive bomb; real writers never produce them.
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for first, second in zip(ordered, ordered[1:]):
        if first.header_offset + 30 + first.compress_size > second.header_offset:
            raise UnsafeModelError(f"{label}: members {first.filename!r} and {second.filename!r} overlap; refused")


def _check_contiguous(archive: zipfile.ZipFile, label: str) -> None:
    """Entries must tile the file from byte 0 to the central directory: no prepended data, gaps or
    comment where a second zip reader (torch's miniz) could find members Python's zipfile does not."""
    if archive.comment:
        raise UnsafeModelError(f"{label}: zip archive carries a comment; refused")
    expected = 0
    handle = archive.fp
    for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
        if info.header_offset != expected and info.header_offset - expected not in _DESCRIPTOR_SIZES:
            raise UnsafeModelError(f"{label}: {info.header_offset - expected} unaccounted bytes before member "
                                   f"{info.filename!r}; refused")
        handle.seek(info.header_offset)
        header = handle.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CorruptArchiveError(f"{label}: member {info.filename!r} has no local header")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        expected = info.header_offset + 30 + name_length + extra_length + info.compress_size
    if archive.start_dir != expected and archive.start_dir - expected not in _DESCRIPTOR_SIZES:
        raise UnsafeModelError(f"{label}: {archive.start_dir - expected} unaccounted bytes before the central "
                               "directory; refused")


def _stream_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limits: ArchiveLimits,
                   budget: list[int]) -> bytes:
    """Decompress one member, return its first bytes; enforce actual sizes and ratios."""
    head, actual = b"", 0
    try:
        with archive.open(info) as handle:
            while chunk := handle.read(_CHUNK):
                if not head:
                    head = chunk[:16]
                actual += len(chunk)
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise ModelTooLargeError(
                        f"{label}: decompressed data exceeds the limit of {limits.max_total_uncompressed} bytes")
                if actual > info.file_size:
                    raise UnsafeModelError(f"{label}: member {info.filename!r} expands beyond its declared size")
    except READ_ERRORS as exc:
        raise CorruptArchiveError(f"{label}: member {info.filename!r} is unreadable (corrupt or truncated): {exc}") from None
    if actual != info.file_size:
        raise CorruptArchiveError(f"{label}: member {info.filename!r} is shorter than declared (truncated)")
    return head


def check_zip(source: str | IO[bytes], limits: ArchiveLimits, *, label: str, archive_bytes: int,
              allow_nested: Callable[[str], bool] = lambda name: False,
              raw_members: Callable[[str], bool] = lambda name: False) -> zipfile.ZipFile:
    """Run every container check; returns the open archive for the caller's own checks.

    `raw_members(name)`: members known to hold raw tensor bytes, exempt from archive sniffing.
    `allow_nested(name)`: members that may be archives (the caller checks those itself)."""
    archive = open_zip(source, label)
    try:
        infos = archive.infolist()
        _check_layout(infos, label, limits, archive_bytes)
        _check_contiguous(archive, label)
        for info in infos:
            _check_entry(info, label, limits)
        budget = [limits.max_total_uncompressed]
        for info in infos:
            if info.is_dir():
                continue
            head = _stream_member(archive, info, label, limits, budget)
            if raw_members(info.filename) or allow_nested(info.filename):
                continue
            kind = _nested_archive_kind(head)
            if kind is not None:
                raise UnsafeModelError(f"{label}: member {info.filename!r} is a nested {kind} archive; refused")
    except BaseException:
        archive.close()
        raise
    return archive


def read_member(archive: zipfile.ZipFile, name: str, label: str, limits: ArchiveLimits) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > limits.max_inline_member_bytes:
        raise ModelTooLargeError(
            f"{label}: member {name!r} is {info.file_size} bytes, above the {limits.max_inline_member_bytes} "
            "bytes allowed for metadata and pickles")
    try:
        return archive.read(info)
    except READ_ERRORS as exc:
        raise CorruptArchiveError(f"{label}: member {name!r} is unreadable: {exc}") from None
