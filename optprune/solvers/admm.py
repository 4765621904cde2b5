"""ADMM on the l0-constrained least squares, with a gradually tightened support.

    min_V  tr((W - V) G (W - V)^T)   s.t.  V has the pattern,

split as V = Z with Z in the pattern set, in Jacobi-scaled coordinates (G~ = S^-1 G S^-1, W~ = W S,
S = diag(sqrt(G_jj))) and the dampened Gram G^ = G~ + lam I (lam = percdamp: 10%, as in Boza's ADMM
weight update).  With U the scaled dual and rho the penalty:

    V <- (W~ G^ + rho (Z - U)) (G^ + rho I)^-1       (one Cholesky factor for all iterations)
    Z <- (V + U) * P_k(|V + U|)                       (the top scores under the pattern at step k)
    U <- U + V - Z

P_k prunes s_k = s (1 - (1 - k / ramp)^3) (a per-row support for N:M until the ramp ends, then the
pattern itself), so the support tightens on a cubic schedule.  The final support is refit exactly
(`LayerProblem.refit`, preconditioned CG on the undampened problem), and the result is the better of
that and the warm start's (never worse than the warm start on the layer objective).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import METHODS, PruneResult, check_method, register


def ramp_pattern(pattern: Pattern, fraction: float) -> Pattern:
    """The pattern pruning `fraction` of its budget (N:M: that share of every row until fraction = 1)."""
    if fraction >= 1.0:
        return pattern
    if pattern.implies_sparsity:
        return Pattern("per-row", pattern.sparsity * fraction)
    return replace(pattern, sparsity=pattern.sparsity * fraction)


def admm_support(problem: LayerProblem, pattern: Pattern, iters: int = 20, ramp: int = 15, rho: float = 1.0,
                 percdamp: float = 0.1, track: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """(keep mask, Z in raw coordinates, objective of Z per iteration when `track`: one more product per
    iteration) of the ADMM iterations (module doc)."""
    W0, G0 = problem.W.float(), problem.G.float()
    s = G0.diagonal().clamp_min(1e-12 * G0.diagonal().max().clamp_min(1e-30)).sqrt()
    G = G0 / s[:, None] / s[None, :]
    G = G + percdamp * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    W = W0 * s[None, :]
    WG = W @ G
    L = torch.linalg.cholesky(G + rho * torch.eye(G.shape[0], dtype=G.dtype, device=G.device))
    V, U = W.clone(), torch.zeros_like(W)
    history = []
    for k in range(1, iters + 1):
        step = ramp_pattern(pattern, 1.0 - (1.0 - min(k / max(ramp, 1), 1.0)) ** 3)
        mask = step.project((V + U).abs())
        Z = (V + U) * mask
        U = U + V - Z
        V = torch.cholesky_solve((WG + rho * (Z - U)).T, L).T
        if track:
            history.append(problem.objective(W_hat=(Z / s[None, :]).to(problem.W.dtype)))
    mask = pattern.project((V + U).abs())
    return mask, ((V + U) * mask / s[None, :]).to(problem.W.dtype), history


@register("admm", accepts=lambda p: p.entrywise, handles="entrywise (unstructured, per-row, N:M)")
def admm(problem: LayerProblem, pattern: Pattern, iters: int = 20, ramp: int = 15, rho: float = 1.0,
         percdamp: float = 0.1, warm_start: str = "sparsegpt") -> PruneResult:
    check_method("admm", pattern)
    if warm_start == "admm" or warm_start not in METHODS:
        raise ValueError(f"unknown warm start {warm_start!r}")
    mask, Z, history = admm_support(problem, pattern, iters, ramp, rho, percdamp)
    weight = problem.refit(mask, Z)
    warm = METHODS[warm_start](problem, pattern)
    if problem.objective(W_hat=warm.weight * warm.mask) < problem.objective(W_hat=weight):
        return PruneResult(warm.mask, warm.weight * warm.mask, "admm", history=history)
    return PruneResult(mask, weight, "admm", history=history)
