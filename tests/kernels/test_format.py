"""Compact pattern format: round trip, reorder, byte counts, and every malformed input it must refuse."""
import itertools

import numpy as np
import pytest
import torch

from kernels.errors import CompactFormatError, KernelError, NotPatternSparse
from kernels.format import CompactConv, compact_conv, pattern_taps


def pattern_pruned(k, c, library, connectivity=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(len(library), 9)
    for i, taps in enumerate(library):
        masks[i, list(taps)] = 1
    mask = masks[torch.randint(len(library), (k, c), generator=gen)]
    if connectivity:
        mask[torch.rand(k, c, generator=gen) < connectivity] = 0
    return (torch.randn(k, c, 9, generator=gen) * mask).view(k, c, 3, 3)


LIB8 = [(4, 0, 1, 3), (4, 1, 2, 5), (4, 3, 6, 7), (4, 5, 7, 8), (4, 0, 2, 8), (4, 1, 7, 6), (4, 3, 5, 2), (4, 0, 8, 6)]


def test_round_trip_and_dense_reconstruction():
    w = pattern_pruned(12, 10, LIB8, connectivity=0.5)
    b = torch.randn(12)
    conv = compact_conv(w, b, name="layer")
    assert torch.equal(conv.to_dense(), w)
    assert np.array_equal(conv.bias, b.numpy())
    again = CompactConv.from_dict(conv.to_dict(), name="layer")
    assert torch.equal(again.to_dense(), w)
    assert conv.to_dict()["shape"].tolist() == [12, 10] and conv.patterns.dtype == np.uint16  # stored as ever
    for key, value in conv.to_dict().items():
        assert np.array_equal(value, again.to_dict()[key]), key


def test_reorder_is_a_permutation_and_heaviest_first():
    w = pattern_pruned(40, 16, LIB8, connectivity=0.6, seed=3)
    conv = compact_conv(w, None, name="l")
    assert sorted(conv.filter_order.tolist()) == list(range(40))
    kernels_per_pos = np.diff(conv.kernel_ptr)
    assert kernels_per_pos[0] == kernels_per_pos.max()
    assert conv.bias.tolist() == [0.0] * 40


def test_bytes_smaller_than_dense_for_sparse_layers():
    conv = compact_conv(pattern_pruned(64, 64, LIB8, connectivity=0.5), None, name="l")
    assert conv.dense_nbytes == 4 * (64 * 64 * 9 + 64)
    assert conv.nbytes < conv.dense_nbytes / 2
    assert 0.15 < conv.density < 0.3
    assert conv.patterns.size <= 8


def test_all_pruned_layer_and_filters():
    w = torch.zeros(5, 3, 3, 3)
    conv = compact_conv(w, torch.ones(5), name="empty")
    assert conv.nnz == 0 and conv.n_kernels == 0 and conv.patterns.size == 0
    assert torch.equal(conv.to_dense(), w)
    assert CompactConv.from_dict(conv.to_dict(), name="empty").nnz == 0
    w2 = pattern_pruned(6, 4, LIB8)
    w2[[1, 4]] = 0
    conv2 = compact_conv(w2, None, name="some")
    assert torch.equal(conv2.to_dense(), w2)


def test_pattern_library_from_zeros_alone():
    # Any pattern shapes work, not only the centre-keeping ones zerodata produces.
    lib = [(0,), (8,), (0, 1, 2, 3, 4, 5, 6, 7, 8), (2, 6)]
    conv = compact_conv(pattern_pruned(8, 8, lib, seed=1), None, name="odd")
    assert sorted(len(pattern_taps(int(m))) for m in conv.patterns) == [1, 1, 2, 9]


def test_too_many_entries_names_layer_and_kernel():
    w = pattern_pruned(4, 4, LIB8)
    w[2, 3] = torch.arange(1.0, 10.0).view(3, 3)
    with pytest.raises(NotPatternSparse, match=r"'blk2'.*filter 2, channel 3.*9 non-zeros > 4"):
        compact_conv(w, None, name="blk2", max_entries=4)


def test_too_many_patterns():
    w = torch.randn(8, 8, 3, 3) * (torch.rand(8, 8, 3, 3) > 0.5)
    with pytest.raises(NotPatternSparse, match=r"'dense'.*distinct non-zero patterns > 8"):
        compact_conv(w, None, name="dense", max_patterns=8)
    assert issubclass(NotPatternSparse, KernelError)


def test_every_four_entry_pattern_is_still_pattern_sparse():
    """zerodata's largest 4-entry library (all 56 patterns keeping the centre) compiles; random zeros do not."""
    every = [(4, *others) for others in itertools.combinations([0, 1, 2, 3, 5, 6, 7, 8], 3)]
    w = pattern_pruned(32, 32, every)
    conv = compact_conv(w, None, name="all56")
    assert len(conv.patterns) == 56
    assert torch.equal(conv.to_dense(), w)
    unstructured = torch.randn(32, 32, 3, 3) * (torch.rand(32, 32, 3, 3) > 0.5)
    with pytest.raises(NotPatternSparse, match=r"distinct non-zero patterns > 64"):
        compact_conv(unstructured, None, name="random")


@pytest.mark.parametrize("weight, why", [
    (torch.zeros(4, 4, 4, 4), "k x k"), (torch.zeros(4, 4, 3, 5), "k x k"), (torch.zeros(4, 4, 3), "k x k"),
    ("not a tensor", "k x k"),
    (torch.full((2, 2, 3, 3), float("nan")), "NaN"), (torch.zeros(0, 2, 3, 3), "no channels")])
def test_bad_weights_refused(weight, why):
    with pytest.raises(NotPatternSparse, match=why):
        compact_conv(weight, None, name="bad")


def test_bad_bias_refused():
    with pytest.raises(NotPatternSparse, match="bias"):
        compact_conv(pattern_pruned(4, 4, LIB8), torch.zeros(3), name="bad")


def _stored():
    return compact_conv(pattern_pruned(6, 5, LIB8, connectivity=0.3), torch.randn(6), name="s").to_dict()


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d.pop("values"), "missing"),
    (lambda d: d.__setitem__("filter_order", d["filter_order"][::-1] * 0), "permutation"),
    (lambda d: d.__setitem__("kernel_pattern", d["kernel_pattern"] + 200), "pattern library"),
    (lambda d: d.__setitem__("kernel_channel", d["kernel_channel"] + 99), "kernel_channel out of range"),
    (lambda d: d.__setitem__("values", d["values"][:-1]), "values length"),
    (lambda d: d.__setitem__("kernel_ptr", d["kernel_ptr"][::-1].copy()), "CSR"),
    (lambda d: d.__setitem__("bias", d["bias"][:2]), "bias length"),
    (lambda d: d.__setitem__("patterns", d["patterns"] | 1024), "9-bit"),
    (lambda d: d.__setitem__("kernel_channel", d["kernel_channel"].astype(np.float64) + 0.5), "malformed"),
    (lambda d: d.__setitem__("shape", np.array([6])), "malformed|shape"),
    (lambda d: d.__setitem__("shape", np.array([10 ** 9, 5])), "out of range"),
    (lambda d: d.__setitem__("values", d["values"].reshape(1, -1)), "one-dimensional"),
])
def test_from_dict_refuses_corrupt_arrays(corrupt, message):
    arrays = _stored()
    corrupt(arrays)
    with pytest.raises(CompactFormatError, match=message):
        CompactConv.from_dict(arrays, name="s")


@pytest.mark.parametrize("size", [5, 7])
def test_large_kernels_round_trip_dense_or_pruned(size):
    gen = torch.Generator().manual_seed(size)
    w = torch.randn(6, 3, size, size, generator=gen)
    w[1] = 0
    w[2, 1, 0] = 0
    conv = compact_conv(w, torch.randn(6), name="big", max_entries=size * size)
    assert conv.kernel_size == size and conv.density == pytest.approx(float((w != 0).float().mean()))
    assert torch.equal(conv.to_dense(), w)
    stored = conv.to_dict()
    assert stored["shape"].tolist() == [6, 3, size] and stored["patterns"].dtype == np.uint64
    again = CompactConv.from_dict(stored, name="big")
    assert again.kernel_size == size and torch.equal(again.to_dense(), w)
    with pytest.raises(NotPatternSparse, match="non-zeros"):
        compact_conv(w, None, name="big")  # the 9-entry pattern limit still holds unless raised
    stored["shape"] = np.array([6, 3, 4])
    with pytest.raises(CompactFormatError, match="kernel_size"):
        CompactConv.from_dict(stored, name="big")


def test_duplicate_channel_in_a_filter_refused():
    arrays = _stored()
    ptr = arrays["kernel_ptr"]
    f = int(np.argmax(np.diff(ptr)))
    arrays["kernel_channel"][ptr[f] + 1] = arrays["kernel_channel"][ptr[f]]
    with pytest.raises(CompactFormatError, match="twice"):
        CompactConv.from_dict(arrays, name="s")
