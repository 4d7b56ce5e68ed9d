"""Compact layout of a pattern-pruned 3x3 conv: reordered filters, per-kernel channel + pattern id, packed non-zeros.

The pattern assignment is read from the zeros alone, so any model whose 3x3 kernels use a small library of
non-zero patterns qualifies, whoever pruned it. Taps are numbered t = k * dy + dx (row-major in the k x k window).
Larger kernels (5x5, 7x7: a ResNet stem) use the same format; a dense one is a single all-taps pattern.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.errors import CompactFormatError, KernelError, NotPatternSparse  # noqa: F401 (re-exported)
from kernels.spec import KERNEL_SIZES

TAPS = 9  # of a 3x3 kernel, the pattern-pruned case
_ARRAYS = ("shape", "filter_order", "kernel_ptr", "kernel_channel", "kernel_pattern", "values", "patterns", "bias")


def pattern_taps(mask: int, taps: int = TAPS) -> list[int]:
    """Tap indices (0..taps-1, ascending) set in a pattern mask."""
    return [t for t in range(taps) if mask >> t & 1]


def _pattern_dtype(kernel_size: int):
    # 3x3 masks stay uint16, as packages have always stored them (older readers load them unchanged).
    return np.uint16 if kernel_size ** 2 <= 16 else np.uint64


@dataclass
class CompactConv:
    """One conv layer, filters reordered; kernel i of reordered filter f is entry kernel_ptr[f] + i."""
    name: str
    out_channels: int
    in_channels: int
    filter_order: np.ndarray    # int32 [K]: position -> original output channel
    kernel_ptr: np.ndarray      # int32 [K+1]: CSR over reordered filters
    kernel_channel: np.ndarray  # int32 [n_kernels]: input channel of each kept kernel
    kernel_pattern: np.ndarray  # uint8 [n_kernels]: index into patterns
    values: np.ndarray          # float32 [nnz]: each kernel's non-zeros in ascending tap order
    patterns: np.ndarray        # [P] k*k-bit tap masks (the pattern library): uint16 for 3x3, uint64 for larger
    bias: np.ndarray            # float32 [K], original channel order
    kernel_size: int = 3        # k of the k x k window

    @property
    def taps(self) -> int:
        return self.kernel_size ** 2

    @property
    def nnz(self) -> int:
        return int(self.values.size)

    @property
    def n_kernels(self) -> int:
        return int(self.kernel_channel.size)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.to_dict().values())

    @property
    def dense_nbytes(self) -> int:
        return 4 * (self.out_channels * self.in_channels * self.taps + self.out_channels)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.out_channels * self.in_channels * self.taps)

    def value_ptr(self) -> np.ndarray:
        """int64 [n_kernels+1]: where each kernel's packed non-zeros start in `values`."""
        counts = np.array([bin(int(m)).count("1") for m in self.patterns], dtype=np.int64)
        ptr = np.zeros(self.n_kernels + 1, dtype=np.int64)
        np.cumsum(counts[self.kernel_pattern.astype(np.int64)], out=ptr[1:])
        return ptr

    def to_dense(self) -> torch.Tensor:
        """The K x C x k x k weight in original filter order (zeros where pruned)."""
        dense = np.zeros((self.out_channels, self.in_channels, self.taps), dtype=np.float32)
        vptr = self.value_ptr()
        taps = [pattern_taps(int(m), self.taps) for m in self.patterns]
        for pos in range(self.out_channels):
            k = int(self.filter_order[pos])
            for i in range(int(self.kernel_ptr[pos]), int(self.kernel_ptr[pos + 1])):
                dense[k, self.kernel_channel[i], taps[self.kernel_pattern[i]]] = self.values[vptr[i]:vptr[i + 1]]
        k = self.kernel_size
        return torch.from_numpy(dense.reshape(self.out_channels, self.in_channels, k, k))

    def to_dict(self) -> dict[str, np.ndarray]:
        # [K, C] for 3x3 (the layout packages have always stored), [K, C, k] otherwise.
        dims = [self.out_channels, self.in_channels] + ([self.kernel_size] if self.kernel_size != 3 else [])
        shape = np.array(dims, dtype=np.int64)
        return {"shape": shape, "filter_order": self.filter_order, "kernel_ptr": self.kernel_ptr,
                "kernel_channel": self.kernel_channel, "kernel_pattern": self.kernel_pattern,
                "values": self.values, "patterns": self.patterns, "bias": self.bias}

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray], *, name: str) -> "CompactConv":
        """Rebuild from `to_dict()` output, checking every invariant (stored files are untrusted)."""
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise CompactFormatError(f"layer {name!r}: compact arrays missing {missing}")
        try:
            a = {k: np.asarray(arrays[k]) for k in _ARRAYS}
            dims = [int(v) for v in a["shape"].reshape(-1)]
            if len(dims) not in (2, 3):
                raise ValueError("shape must hold [out_channels, in_channels(, kernel_size)]")
            K, C, k = dims[0], dims[1], dims[2] if len(dims) == 3 else 3
            if k not in KERNEL_SIZES:
                raise ValueError(f"kernel_size {k} is not one of {KERNEL_SIZES}")
            conv = cls(name=name, out_channels=K, in_channels=C,
                       filter_order=a["filter_order"].astype(np.int32, casting="safe"),
                       kernel_ptr=a["kernel_ptr"].astype(np.int32, casting="safe"),
                       kernel_channel=a["kernel_channel"].astype(np.int32, casting="safe"),
                       kernel_pattern=a["kernel_pattern"].astype(np.uint8, casting="safe"),
                       values=a["values"].astype(np.float32, casting="same_kind"),
                       patterns=a["patterns"].astype(_pattern_dtype(k), casting="safe"),
                       bias=a["bias"].astype(np.float32, casting="same_kind"), kernel_size=k)
        except (TypeError, ValueError) as exc:
            raise CompactFormatError(f"layer {name!r}: malformed compact arrays: {exc}") from None
        conv.validate()
        return conv

    def validate(self) -> None:
        def bad(why: str):
            raise CompactFormatError(f"layer {self.name!r}: {why}")
        K, C = self.out_channels, self.in_channels
        if self.kernel_size not in KERNEL_SIZES:
            bad(f"kernel_size {self.kernel_size!r} is not one of {KERNEL_SIZES}")
        if not (1 <= K <= 1 << 16 and 1 <= C <= 1 << 16):
            bad(f"channel counts {K}x{C} out of range")
        for field in ("filter_order", "kernel_ptr", "kernel_channel", "kernel_pattern", "values", "patterns", "bias"):
            if getattr(self, field).ndim != 1:
                bad(f"{field} must be one-dimensional")
        if self.filter_order.size != K or not np.array_equal(np.sort(self.filter_order), np.arange(K)):
            bad("filter_order is not a permutation of the output channels")
        ptr = self.kernel_ptr
        if ptr.size != K + 1 or ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != self.kernel_channel.size:
            bad("kernel_ptr is not a monotone CSR index over the kernels")
        if np.any(np.diff(ptr) > C):
            bad("a filter lists more kernels than there are input channels")
        if self.kernel_pattern.size != self.kernel_channel.size:
            bad("kernel_pattern and kernel_channel differ in length")
        if self.kernel_channel.size and (self.kernel_channel.min() < 0 or self.kernel_channel.max() >= C):
            bad("kernel_channel out of range")
        for f in range(K):
            chans = self.kernel_channel[ptr[f]:ptr[f + 1]]
            if np.unique(chans).size != chans.size:
                bad(f"filter position {f} lists an input channel twice")
        if self.patterns.size > 255 or np.any(self.patterns == 0) or np.any(self.patterns >= 1 << self.taps):
            bad(f"patterns must be 1..255 non-empty {self.taps}-bit masks")
        if self.kernel_pattern.size and self.kernel_pattern.max() >= self.patterns.size:
            bad("kernel_pattern refers past the pattern library")
        if self.values.size != self.value_ptr()[-1]:
            bad("values length does not match the kernels' patterns")
        if self.bias.size != K:
            bad("bias length differs from out_channels")


# Above this many distinct kernel patterns a layer is not pattern-sparse (random unstructured zeros give hundreds).
# 64 admits every library zerodata makes with 4 entries, up to all 56 patterns that keep the centre: the generated
# code does not depend on the library, only the speed does (fewer (channel, tap) loads shared within a filter
# block: ResNet-56 with all 56 patterns ran ~1.2x slower than with 8, docs/benchmarks/kernels.md, session 25).
MAX_PATTERNS = 64


def compact_conv(weight: torch.Tensor, bias: torch.Tensor | None, *, name: str,
                 max_patterns: int = MAX_PATTERNS, max_entries: int = 9) -> CompactConv:
    """Compact a K x C x k x k weight (k in KERNEL_SIZES, BN already folded) whose kernels use at most
    `max_patterns` patterns.

    Raises NotPatternSparse naming the layer when a kernel has more than `max_entries` non-zeros or the
    layer uses more than `max_patterns` distinct patterns.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[2] != weight.shape[3] \
            or int(weight.shape[2]) not in KERNEL_SIZES:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise NotPatternSparse(name, f"expected a K x C x k x k weight, k in {KERNEL_SIZES}, got {shape}")
    K, C, size = int(weight.shape[0]), int(weight.shape[1]), int(weight.shape[2])
    taps = size * size
    if K == 0 or C == 0:
        raise NotPatternSparse(name, "the weight has no channels")
    w = weight.detach().to(torch.float32).cpu().reshape(K, C, taps).numpy()
    if not np.all(np.isfinite(w)):
        raise NotPatternSparse(name, "the weight holds NaN or infinite values")
    b = np.zeros(K, dtype=np.float32)
    if bias is not None:
        bias_np = bias.detach().to(torch.float32).cpu().reshape(-1).numpy()
        if bias_np.size != K:
            raise NotPatternSparse(name, f"bias has {bias_np.size} entries for {K} filters")
        b = bias_np.astype(np.float32).copy()

    nonzero = w != 0
    masks = (nonzero * (1 << np.arange(taps, dtype=np.int64))).sum(axis=2).astype(np.int64)   # [K, C]
    counts = nonzero.sum(axis=2)
    if counts.max(initial=0) > max_entries:
        k, c = np.unravel_index(int(np.argmax(counts)), counts.shape)
        raise NotPatternSparse(name, f"kernel (filter {k}, channel {c}) has {int(counts[k, c])} non-zeros "
                                     f"> {max_entries} allowed")
    library, counts_per_pattern = np.unique(masks[masks != 0], return_counts=True)
    if library.size > max_patterns:
        raise NotPatternSparse(name, f"{library.size} distinct non-zero patterns > {max_patterns} allowed")
    # Most used pattern first, so pattern ids are stable and small for the common case.
    library = library[np.argsort(-counts_per_pattern, kind="stable")]
    pattern_id = {int(m): i for i, m in enumerate(library)}

    order = _filter_order(masks, nonzero)
    kernel_ptr = [0]
    channels, pattern_ids, values = [], [], []
    for k in order:
        for c in np.flatnonzero(masks[k]):
            channels.append(c)
            pattern_ids.append(pattern_id[int(masks[k, c])])
            values.append(w[k, c][nonzero[k, c]])
        kernel_ptr.append(len(channels))
    conv = CompactConv(
        name=name, out_channels=K, in_channels=C,
        filter_order=np.asarray(order, dtype=np.int32),
        kernel_ptr=np.asarray(kernel_ptr, dtype=np.int32),
        kernel_channel=np.asarray(channels, dtype=np.int32),
        kernel_pattern=np.asarray(pattern_ids, dtype=np.uint8),
        values=np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32),
        patterns=library.astype(_pattern_dtype(size)), bias=b, kernel_size=size)
    conv.validate()
    return conv


def _filter_order(masks: np.ndarray, nonzero: np.ndarray) -> list[int]:
    """Heaviest filters first; among similar weights, filters that share (channel, tap) positions sit together.

    Neighbouring filters form a register block in the generated code, so shared (channel, tap) positions
    mean one input load feeds several FMAs. Greedy: start each group of 8 from the heaviest remaining filter,
    then add the remaining filter of similar weight whose taps overlap the group's most.
    """
    K = masks.shape[0]
    taps = nonzero.reshape(K, -1).astype(np.float32)          # [K, C*taps]
    nnz = taps.sum(axis=1)
    remaining = sorted(range(K), key=lambda k: (-nnz[k], k))
    order: list[int] = []
    group = 8
    window = 64                                            # candidates considered per pick (keeps it O(K * window))
    while remaining:
        seed = remaining.pop(0)
        order.append(seed)
        members = taps[seed].copy()
        for _ in range(group - 1):
            if not remaining:
                break
            cands = remaining[:window]
            scores = taps[cands] @ members
            pick = cands[int(np.argmax(scores))]
            remaining.remove(pick)
            order.append(pick)
            members += taps[pick]
    return order
