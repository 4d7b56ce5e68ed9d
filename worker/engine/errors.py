"""Errors the engine raises. Messages are shown to users verbatim, so each names the layer, op or
option at fault and says what to do about it."""
from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class UnsupportedModelError(EngineError):
    """The model uses something the engine cannot handle (an op, a layer type, a file layout)."""


class InvalidConfigError(EngineError):
    """A compression option (or the input shape) is out of range or does not fit the model."""


class UnsafeModelError(EngineError):
    """The file could run code or exhaust resources when loaded (pickled payloads, path traversal, bombs)."""


class CorruptModelError(EngineError):
    """The file is not a readable model of the format it claims to be."""
