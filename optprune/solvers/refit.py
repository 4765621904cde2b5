"""Least-squares refit of the kept weights, batched over rows (preconditioned CG).

For a fixed support S_i per row:  min_v (w_i - v)^T G (w_i - v),  v = 0 off S_i,
i.e. the masked normal equations  P (G + lam I) P v = P G w  (P = diag(mask_i)).
All rows run at once: one CG step is one (rows x d) @ (d x d) product, so it is
GPU-native and needs no per-row factorisation.  A small ridge lam (a fraction
of mean diag G) tames G's conditioning; each row keeps the refit only where it
lowers the true (undamped) error, so refit never makes a row worse.
"""
from __future__ import annotations

import torch

from ..problem import LayerProblem


def refit_weights(problem: LayerProblem, mask: torch.Tensor, W_hat: torch.Tensor | None = None,
                  iters: int = 100, percdamp: float = 0.01, tol: float = 1e-10) -> torch.Tensor:
    mask = problem.check_mask_shape(mask)
    W, G = problem.W, problem.G
    M = mask.to(W.dtype)
    lam = percdamp * G.diagonal().mean()
    precond = 1.0 / (G.diagonal() + lam).clamp_min(1e-30)

    def apply(V):
        return M * (V @ G + lam * V)

    V = (W * M) if W_hat is None else W_hat.to(W) * M
    R = M * (W @ G) - apply(V)
    Z = R * precond
    P = Z.clone()
    rz = (R * Z).sum(1, keepdim=True)
    rz0 = rz.clone().clamp_min(1e-300)
    for _ in range(iters):
        AP = apply(P)
        alpha = rz / (P * AP).sum(1, keepdim=True).clamp_min(1e-300)
        V = V + alpha * P
        R = R - alpha * AP
        Z = R * precond
        rz_new = (R * Z).sum(1, keepdim=True)
        if bool((rz_new <= tol * rz0).all()):
            break
        P = Z + (rz_new / rz.clamp_min(1e-300)) * P
        rz = rz_new
    start = W * M if W_hat is None else W_hat.to(W) * M
    better = problem.row_errors(W_hat=V) < problem.row_errors(W_hat=start)
    return torch.where(better[:, None], V, start)
