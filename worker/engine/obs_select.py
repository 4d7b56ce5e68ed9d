"""Mask selection that sees the data: pick each kernel's pattern, and the kernels to remove, by the loss the
choice costs on the synthetic inputs (Optimal Brain Surgeon), not by weight magnitude.

For a layer's quadratic loss (w - w*)^T H (w - w*) (per output channel, in the post-BatchNorm scale), zeroing
a set R of weights while every other weight is re-solved costs exactly  w*_R^T [(H^-1)_RR]^-1 w*_R.
Applied per kernel (input channel c, its 9x9 block of H^-1), with the other kernels free: the pattern p of a
kernel costs  cost(o, c, p) = w_R(p)^T [(H^-1)_cc[R(p), R(p)]]^-1 w_R(p),  R(p) = the positions p drops; removing
the whole kernel costs the same with R = all 9. The [.]^-1 matrices do not depend on the output channel, so a
layer needs only Cin x P small inverses. Interactions between kernels are ignored (each is priced as if the rest
stayed dense); the masked least squares afterwards re-solves the kept weights jointly.
"""
from __future__ import annotations

import torch

from worker.engine.connectivity import keep_kernels
from worker.engine.patterns import expand_mask


def inverse_blocks(Hinv: torch.Tensor, cin: int) -> torch.Tensor:
    """The Cin diagonal 9x9 blocks of a (Cin*9) x (Cin*9) inverse Hessian, as Cin x 9 x 9."""
    blocks = Hinv.reshape(cin, 9, cin, 9)
    idx = torch.arange(cin, device=Hinv.device)
    return blocks[idx, :, idx, :]


def removal_costs(W: torch.Tensor, blocks: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W: (Cout, Cin, 9) weights (scaled per output channel), blocks: Cin x 9 x 9 of H^-1, masks: P x 9 0/1.
    Returns (pattern cost Cout x Cin x P, whole-kernel cost Cout x Cin)."""
    W, blocks = W.double(), blocks.double()
    dropped = [torch.nonzero(m < 0.5).flatten() for m in masks]
    cout, cin, _ = W.shape
    costs = torch.zeros(cout, cin, len(dropped), dtype=W.dtype, device=W.device)
    for p, R in enumerate(dropped):
        if R.numel() == 0:
            continue
        inv = torch.linalg.inv(blocks[:, R][:, :, R])  # Cin x r x r
        wR = W[:, :, R]
        costs[:, :, p] = torch.einsum("oci,cij,ocj->oc", wR, inv, wR)
    whole = torch.einsum("oci,cij,ocj->oc", W, torch.linalg.inv(blocks), W)
    return costs.clamp_min(0), whole.clamp_min(0)


def obs_project(W: torch.Tensor, blocks: torch.Tensor, masks: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Like admm.project but priced by the loss: W (Cout, Cin, 3, 3) in the scaled space. Each kernel takes the
    cheapest pattern; then the `rate` fraction of kernels whose removal adds least loss on top is removed.
    Returns (bool mask like W, pattern index per kernel with -1 = removed)."""
    cout, cin = W.shape[:2]
    costs, whole = removal_costs(W.reshape(cout, cin, 9), blocks, masks)
    best, idx = costs.min(-1)
    keep = keep_kernels(whole - best, rate)
    return expand_mask(idx, keep, masks), torch.where(keep, idx, torch.full_like(idx, -1))


def sequential_obs_project(W: torch.Tensor, H: torch.Tensor, masks: torch.Tensor, rate: float,
                           blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT/OBC-style: kernels (input channels) in order, each priced with the inverse Hessian of the
    weights not yet fixed, its pattern chosen, and the loss its removed weights cause compensated in the later
    kernels before the next one is priced. Kernels removed by connectivity are chosen first (obs_project's rule).
    W: (Cout, Cin, 3, 3) scaled weights (the dense optimum), H: damped (Cin*9)^2 Hessian, blocks: its inverse's
    diagonal blocks. Returns (bool mask like W, pattern index per kernel with -1 = removed)."""
    cout, cin = W.shape[:2]
    masks = masks.double()
    _, keep_idx = obs_project(W, blocks, masks, rate)
    keep = keep_idx >= 0
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    W = W.reshape(cout, -1).double().clone()
    idx = torch.zeros(cout, cin, dtype=torch.long, device=W.device)
    for c in range(cin):
        b = slice(c * 9, c * 9 + 9)
        Ub = U[b, b]
        costs, _ = removal_costs(W[:, b].reshape(cout, 1, 9), (Ub.T @ Ub).unsqueeze(0), masks)
        idx[:, c] = costs[:, 0].argmin(-1)
        drop = (masks[idx[:, c]] < 0.5) | ~keep[:, c, None]  # Cout x 9
        for j in range(9):
            col = c * 9 + j
            err = W[:, col] * drop[:, j] / U[col, col]
            W[:, col:] -= err[:, None] * U[col, col:][None, :]
    return expand_mask(idx, keep, masks), torch.where(keep, idx, torch.full_like(idx, -1))
