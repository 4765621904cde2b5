"""The batched masked conjugate-gradient solve behind `LayerProblem.refit`.

For a fixed support per row:  min_v (w_i - v)^T G (w_i - v),  v = 0 off S_i, i.e. the masked
normal equations  P (G + lam I) P v = P b  (P = diag(mask_i), b = G w_i), solved for all rows at once.
A small ridge lam (a fraction of mean diag G) tames G's conditioning.
"""
from __future__ import annotations

import torch


def batched_masked_cg(B: torch.Tensor, G: torch.Tensor, mask: torch.Tensor, start: torch.Tensor,
                      lam: torch.Tensor | float, iters: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """Jacobi-preconditioned CG from `start` (zero off the mask) with ridge `lam` and right-hand side
    B (W G, or W C for a dense target); stops when every row's preconditioned residual fell below tol
    times its first value."""
    M = mask.to(B.dtype)
    precond = 1.0 / (G.diagonal() + lam).clamp_min(1e-30)

    def apply(V):
        return M * (V @ G + lam * V)

    V = start
    R = M * B - apply(V)
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
    return V
