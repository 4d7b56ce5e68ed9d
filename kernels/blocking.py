"""Turn a compact layer into the op streams the generated code walks.

Work is cut into (filter block, input-channel chunk) pieces. A block holds `filters` consecutive
(reordered) filters, one accumulator row each. An op is one (input channel, tap) position used by at
least one filter of the block: one set of aligned loads from the tile's tap buffer, then one FMA per slot
in the op's slot mask. Inside a piece, ops are grouped by slot mask so the generated code has one loop per
mask with the slots baked in: no per-op branching, and each load feeds every filter that uses it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.format import CompactConv


@dataclass
class BlockedOps:
    filters: int
    n_blocks: int
    n_chunks: int
    chunk: int                # input channels per chunk
    used_taps: np.ndarray     # int64 [n_used]: taps any kernel uses, ascending (the tap buffer's rows)
    offsets: np.ndarray       # int64 [n_ops]: op's float offset in the tap buffer ((c_local * n_used + row) * tile)
    weights: np.ndarray       # float32 [nnz]: in op order, slots ascending within an op
    counts: np.ndarray        # int64 [n_blocks * n_chunks, 2**filters - 1]: ops per slot mask (column m - 1)
    op_start: np.ndarray      # int64 [n_blocks * n_chunks + 1]
    w_start: np.ndarray       # int64 [n_blocks * n_chunks + 1]
    out_channel: np.ndarray   # int64 [n_blocks * filters]: original output channel per slot, -1 if empty
    cost: np.ndarray          # int64 [n_blocks + 1]: prefix sum of per-block work, for thread balance


def _nonzero_table(conv: CompactConv) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per non-zero: reordered filter position, input channel, tap, value (in `values` order)."""
    pattern_taps = [np.array([t for t in range(conv.taps) if int(m) >> t & 1], dtype=np.int64) for m in conv.patterns]
    counts = np.array([len(t) for t in pattern_taps], dtype=np.int64)
    kp = conv.kernel_pattern.astype(np.int64)
    n_per_kernel = counts[kp] if kp.size else np.zeros(0, np.int64)
    kernel_pos = np.repeat(np.arange(conv.out_channels, dtype=np.int64), np.diff(conv.kernel_ptr).astype(np.int64))
    pos = np.repeat(kernel_pos, n_per_kernel)
    chan = np.repeat(conv.kernel_channel.astype(np.int64), n_per_kernel)
    taps = np.concatenate([pattern_taps[p] for p in kp]) if kp.size else np.zeros(0, np.int64)
    return pos, chan, taps, conv.values.astype(np.float32)


def block_ops(conv: CompactConv, filters: int, chunk: int, tile: int) -> BlockedOps:
    K, C = conv.out_channels, conv.in_channels
    chunk = C if chunk <= 0 else min(chunk, C)
    n_blocks, n_chunks = -(-K // filters), -(-C // chunk)
    n_masks = (1 << filters) - 1
    pos, chan, taps, vals = _nonzero_table(conv)
    n_taps = conv.taps
    used = np.unique(taps) if taps.size else np.array([n_taps // 2], dtype=np.int64)  # all pruned: centre tap
    row_of_tap = np.full(n_taps, -1, dtype=np.int64)
    row_of_tap[used] = np.arange(used.size)
    block, slot = pos // filters, pos % filters
    # One op per (block, channel, tap); its mask ORs the slots that use it.
    key = (block * C + chan) * n_taps + taps
    uniq, inverse = np.unique(key, return_inverse=True)
    op_mask = np.zeros(uniq.size, dtype=np.int64)
    np.bitwise_or.at(op_mask, inverse, 1 << slot)
    op_block, op_chan, op_tap = uniq // (C * n_taps), (uniq // n_taps) % C, uniq % n_taps
    op_piece = op_block * n_chunks + op_chan // chunk
    op_offset = ((op_chan % chunk) * used.size + row_of_tap[op_tap]) * tile
    # Op order: piece (block, chunk), then mask, then ascending buffer offset (walks memory forwards).
    op_order = np.lexsort((op_offset, op_mask, op_piece))
    rank = np.empty_like(op_order)
    rank[op_order] = np.arange(op_order.size)
    w_order = np.lexsort((slot, rank[inverse]))
    n_pieces = n_blocks * n_chunks
    counts = np.zeros((n_pieces, n_masks), dtype=np.int64)
    np.add.at(counts, (op_piece, op_mask - 1), 1)
    ops_per_piece = np.bincount(op_piece, minlength=n_pieces)
    nnz_per_piece = np.bincount(op_piece[inverse], minlength=n_pieces)
    out_channel = np.full(n_blocks * filters, -1, dtype=np.int64)
    out_channel[:K] = conv.filter_order.astype(np.int64)
    # Cost model: FMAs plus loads per op plus accumulator traffic, so empty blocks still count a little.
    work = (nnz_per_piece + ops_per_piece).reshape(n_blocks, n_chunks).sum(axis=1) + filters * n_chunks
    return BlockedOps(
        filters=filters, n_blocks=n_blocks, n_chunks=n_chunks, chunk=chunk, used_taps=used,
        offsets=op_offset[op_order], weights=vals[w_order], counts=counts,
        op_start=np.concatenate([[0], np.cumsum(ops_per_piece)]),
        w_start=np.concatenate([[0], np.cumsum(nnz_per_piece)]),
        out_channel=out_channel, cost=np.concatenate([[0], np.cumsum(work)]))
