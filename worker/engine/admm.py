"""Layer-wise ADMM pattern + connectivity pruning on the reconstruction objective.

Per output channel o (all in the layer's post-BatchNorm scale s_o):
    min_w  s_o^2 (w^T H w - 2 w^T b_o + yy_o)   s.t.  W in S (pattern per kernel, kernels kept per layer)
ADMM: W-step (H/h + rho I) W^T = B/h + rho (Z - U)^T (one Cholesky for all channels), Z-step = Euclidean
projection onto S, U += W - Z, rho grows geometrically. Then the mask is fixed and masked least squares
gives the final weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.engine.connectivity import keep_kernels
from worker.engine.layer_stats import LayerStats
from worker.engine.obs_select import inverse_blocks, obs_project, sequential_obs_project
from worker.engine.patterns import best_patterns, expand_mask


@dataclass
class PruneResult:
    weight: torch.Tensor        # same shape as the input weight, zeros outside the mask
    mask: torch.Tensor          # bool, same shape
    pattern_idx: torch.Tensor   # Cout x Cin pattern per kernel (3x3 only), -1 = kernel removed
    relative_error: float       # post-BN relative reconstruction error on the synthetic inputs


def project(weight: torch.Tensor, masks: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean projection of a (Cout, Cin, 3, 3) weight onto the pattern+connectivity set."""
    idx, kept = best_patterns(weight, masks)
    keep = keep_kernels(kept, rate)
    return expand_mask(idx, keep, masks), torch.where(keep, idx, torch.full_like(idx, -1))


def objective(W: torch.Tensor, st: LayerStats, scale: torch.Tensor) -> float:
    """Relative error sum_o s_o^2 ||w_o a - y_o||^2 / sum_o s_o^2 ||y_o||^2, W as (Cout, D)."""
    W = W.double().to(st.H.device)
    err = ((W @ st.H) * W).sum(1) - 2 * (W * st.B.T).sum(1) + st.yy
    s2 = scale.double().to(W.device) ** 2
    return float((s2 * err.clamp_min(0)).sum() / (s2 * st.yy).sum().clamp_min(1e-30))


DIRECT_SOLVE_MAX_D = 1536  # above this a per-channel Cholesky is too slow: conjugate gradients instead


def solve_masked(st: LayerStats, mask: torch.Tensor, damp: float = 1e-4, chunk_elems: int = 24_000_000,
                 prior: torch.Tensor | None = None) -> torch.Tensor:
    """Least squares per output channel restricted to its kept inputs. mask: (Cout, D) bool. Returns (Cout, D).
    `damp` (relative to the mean input energy) pulls the solution towards `prior` (the original weights) rather
    than zero: directions the synthetic inputs barely excite keep their trained values."""
    H, B = st.H, st.B
    D = H.shape[0]
    h = float(H.diagonal().mean()) or 1.0
    Hn = H / h + damp * torch.eye(D, dtype=H.dtype, device=H.device)
    mask = mask.to(H.device)
    Bt = B.T / h
    if prior is not None:
        Bt = Bt + damp * prior.reshape(mask.shape).double().to(H.device)
    if D > DIRECT_SOLVE_MAX_D:
        return _cg_masked(Hn, Bt * mask.double(), mask.double())
    out = torch.zeros(mask.shape, dtype=H.dtype, device=H.device)
    step = max(1, chunk_elems // (D * D))
    for o0 in range(0, mask.shape[0], step):
        m = mask[o0:o0 + step].double()  # c x D
        A = Hn.unsqueeze(0) * m[:, :, None] * m[:, None, :]
        A = A + torch.diag_embed(1.0 - m)  # removed inputs: identity rows, solution 0
        rhs = (Bt[o0:o0 + step] * m).unsqueeze(-1)
        L, info = torch.linalg.cholesky_ex(A)
        sol = torch.cholesky_solve(rhs, L) if int(info.max()) == 0 else torch.linalg.lstsq(A, rhs).solution
        out[o0:o0 + step] = sol.squeeze(-1) * m
    return out


def _cg_masked(Hn: torch.Tensor, rhs: torch.Tensor, M: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Batched conjugate gradients for (M Hn M) x = rhs, one system per row, x zero outside M."""
    X = torch.zeros_like(rhs)
    R = rhs.clone()
    P = R.clone()
    rs = (R * R).sum(1)
    floor = 1e-20 * float(rs.max().clamp_min(1e-30))
    for _ in range(iters):
        AP = (P @ Hn) * M
        alpha = rs / (P * AP).sum(1).clamp_min(1e-30)
        X += alpha[:, None] * P
        R -= alpha[:, None] * AP
        rs_new = (R * R).sum(1)
        if float(rs_new.max()) < floor:
            break
        P = R + (rs_new / rs.clamp_min(1e-30))[:, None] * P
        rs = rs_new
    return X * M


SELECTIONS = ("euclidean", "obs-dense", "obs-final", "obs-admm", "obs-seq")


def admm_prune(weight0: torch.Tensor, st: LayerStats, masks: torch.Tensor, rate: float, scale: torch.Tensor,
               iterations: int = 30, rho0: float = 1e-3, rho_growth: float = 1.4, ridge: float = 1e-4,
               selection: str = "euclidean", obs_damp: float = 1e-2) -> PruneResult:
    """Prune one 3x3 conv: ADMM towards the set, hard projection, masked least squares on the fixed mask.
    `selection` prices the masks: "euclidean" (magnitude of the ADMM iterate), "obs-final" (ADMM as before, the
    final mask by the loss each choice costs, obs_select.py), "obs-admm" (every Z-step priced that way too),
    "obs-dense" (no ADMM: the loss-priced mask of the unconstrained least-squares optimum)."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown mask selection {selection!r}")
    cout, cin = weight0.shape[:2]
    s = scale.double().to(st.H.device).clamp_min(float(scale.abs().max()) * 1e-6 + 1e-12)[:, None]
    h = float(st.H.diagonal().mean()) or 1.0
    Hn, Bn = st.H / h, st.B.T / h * s  # scaled space: w~ = s w
    # one eigendecomposition serves every rho: (H + rho I)^-1 = Q diag(1 / (lambda + rho)) Q^T
    need_eig = iterations or selection != "euclidean"
    evals, Q = torch.linalg.eigh(Hn) if need_eig else (None, None)
    W0 = weight0.reshape(cout, -1).double().to(Hn.device) * s
    blocks = None
    if selection != "euclidean":
        blocks = inverse_blocks((Q / (evals.clamp_min(0) + obs_damp)) @ Q.T, cin)

    def select(V):
        if blocks is None:
            return project(V.reshape(weight0.shape), masks.double(), rate)
        return obs_project(V.reshape(weight0.shape), blocks, masks.double(), rate)

    if selection in ("obs-dense", "obs-seq"):
        W = (((Bn + ridge * W0) @ Q) / (evals.clamp_min(0) + ridge)) @ Q.T
        if selection == "obs-seq":
            Hd = Hn + obs_damp * torch.eye(Hn.shape[0], dtype=Hn.dtype, device=Hn.device)
            mask, idx = sequential_obs_project(W.reshape(weight0.shape), Hd, masks, rate, blocks)
        else:
            mask, idx = select(W)
        return _finish(weight0, st, mask, idx, scale, ridge)
    W = W0
    Z, U = W.clone(), torch.zeros_like(W)
    rho = rho0
    for _ in range(iterations):
        W = (((Bn + rho * (Z - U)) @ Q) / (evals.clamp_min(0) + rho)) @ Q.T
        m, _ = select(W + U) if selection == "obs-admm" else project((W + U).reshape(weight0.shape), masks.double(), rate)
        Z = (W + U) * m.reshape(cout, -1)
        U = U + W - Z
        rho *= rho_growth
    final = W + U if iterations else W
    mask, idx = select(final)
    return _finish(weight0, st, mask, idx, scale, ridge)


def magnitude_prune(weight0: torch.Tensor, st: LayerStats | None, masks: torch.Tensor, rate: float,
                    scale: torch.Tensor, refit: bool = True, ridge: float = 1e-4) -> PruneResult:
    """The baseline: project the original weights by magnitude; optionally refit them by masked least squares."""
    mask, idx = project(weight0.double() * scale.double().view(-1, 1, 1, 1), masks.double(), rate)
    if st is None or not refit:
        w = weight0 * mask
        err = objective(w.reshape(w.shape[0], -1), st, scale) if st is not None else float("nan")
        return PruneResult(w, mask, idx, err)
    return _finish(weight0, st, mask, idx, scale, ridge)


def _finish(weight0, st, mask, idx, scale, ridge: float = 1e-4) -> PruneResult:
    W = solve_masked(st, mask.reshape(mask.shape[0], -1), damp=ridge, prior=weight0.reshape(mask.shape[0], -1))
    err = objective(W, st, scale)
    return PruneResult(W.reshape(weight0.shape).to(weight0.dtype) * mask, mask, idx, err)
