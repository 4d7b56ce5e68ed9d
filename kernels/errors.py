"""Errors the kernel compiler raises: one family, each message names the layer or tool at fault."""


class KernelError(Exception):
    """Base class: anything in kernels/ that cannot go on raises a subclass of this."""


class NotPatternSparse(KernelError):
    """A conv's weights do not follow a small pattern library (the caller falls back to dense)."""

    def __init__(self, layer: str, reason: str):
        self.layer = layer
        self.reason = reason
        super().__init__(f"layer {layer!r} is not pattern-sparse: {reason}")


class UnsupportedConv(KernelError):
    """A conv shape or option the generator does not handle (the caller falls back to dense)."""


class CompactFormatError(KernelError):
    """A stored compact layer is malformed or inconsistent."""


class KernelBuildError(KernelError):
    """The C++ compiler is missing or failed; carries its stderr."""

    def __init__(self, message: str, stderr: str = ""):
        self.stderr = stderr
        super().__init__(message + (f"\n--- compiler stderr ---\n{stderr}" if stderr else ""))


class KernelRuntimeError(KernelError):
    """A compiled layer was called with tensors it cannot take, or its symbol is missing."""
