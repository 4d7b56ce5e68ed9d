"""Constants of the generated C++ source: numbers, arrays and byte blobs that round-trip exactly."""
from __future__ import annotations

import numpy as np


def ints(values: np.ndarray) -> str:
    values = np.asarray(values).reshape(-1)
    return ",".join(map(str, values.tolist())) if values.size else "0"


def floats(values: np.ndarray) -> str:
    # 9 significant digits round-trip every float32 exactly.
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    return ",".join("%.9g" % v for v in values.tolist()) if values.size else "0"


def array(ctype: str, name: str, body: str) -> str:
    return f"alignas(64) static const {ctype} {name}[] = {{{body}}};\n"


# Printable ASCII stands for itself in a string literal, except the quote, backslash and '?' (trigraphs).
ESCAPE = [chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else "\\%03o" % b for b in range(256)]


def blob(ctype: str, dtype: str, name: str, values: np.ndarray) -> str:
    """A large constant array as little-endian bytes in a string literal: compiles ~10x faster than numbers."""
    raw = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    lines = ['"' + "".join(ESCAPE[b] for b in raw[i:i + 96]) + '"' for i in range(0, len(raw), 96)] or ['""']
    return (f"alignas(64) static const unsigned char {name}_BYTES[] =\n" + "\n".join(lines) + ";\n"
            f"static const {ctype}* const {name} = reinterpret_cast<const {ctype}*>({name}_BYTES);\n")
