"""The refusals the safety checks raise; all are `UnsafeModelError`s so one `except` catches them."""
from __future__ import annotations

from contextlib import contextmanager

from worker.engine.errors import CorruptModelError, UnsafeModelError

__all__ = ["UnsafeModelError", "CorruptArchiveError", "ModelTooLargeError", "UnknownFormatError",
           "malformed_is_corrupt"]


class CorruptArchiveError(UnsafeModelError, CorruptModelError):
    """Truncated, corrupt or structurally invalid: refused because it cannot be checked."""


class ModelTooLargeError(UnsafeModelError):
    """The file (or what it expands to) exceeds a size limit."""


class UnknownFormatError(UnsafeModelError):
    """Not a model format we accept (judged from the bytes, never the file name)."""


@contextmanager
def malformed_is_corrupt(label: str, what: str):
    """Hand-made metadata can have any shape: a lookup that fails on it means 'corrupt', not a crash."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise CorruptArchiveError(f"{label}: {what} is malformed ({type(exc).__name__}: {str(exc)[:120]})") from None
