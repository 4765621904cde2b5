"""l0-penalised least squares: the problem mAIHT descends.

    min_{V, S}  tr((W - V) G (W - V)^T) + sum_b lam_b sum_j S_bj
    s.t.        |V_bj| <= M_bj S_bj,   S in {0,1}^{R x d}          (lam_b = lam for a per-layer penalty)

For a dense-target layer the least-squares term is tr(V G V^T) - 2 tr(B V^T) + sum kappa (pass B and
kappa from `LayerProblem.linear64`).  At the optimum S = [V != 0], so the objective is f(V) + sum_b lam_b ||v_b||_0.  The hard-threshold
step of IHT is the exact prox of lam ||.||_0 at step eta: keep u_e iff u_e^2 > 2 lam eta; mAIHT
re-tunes lam so that the kept count follows the pattern's budget.
"""
from __future__ import annotations

import numpy as np

from .statement import Statement, StatementBuilder


def l0_penalized(W: np.ndarray, G: np.ndarray, lam, big_m: np.ndarray, B: np.ndarray | None = None,
                 kappa: np.ndarray | None = None) -> Statement:
    """Variables v (R x d, row-major) then s (R x d, binary); B, kappa: a dense target's linear term."""
    R, d = W.shape
    lam = np.broadcast_to(np.asarray(lam, float).reshape(-1, 1), (R, 1))
    b = StatementBuilder("l0-penalised least squares")
    M = np.broadcast_to(big_m, (R, d)).reshape(-1)
    B = W @ G if B is None else B
    v = b.add_vars("v", R * d, -M, M, (-2 * B).reshape(-1))
    s = b.add_vars("s", R * d, 0, 1, np.repeat(lam[:, 0], d), integer=True)
    for k in range(R * d):
        b.add_row([v[k], s[k]], [1.0, -M[k]], upper=0.0)
        b.add_row([v[k], s[k]], [-1.0, -M[k]], upper=0.0)
    Q = np.zeros((2 * R * d, 2 * R * d))
    for r in range(R):
        Q[r * d:(r + 1) * d, r * d:(r + 1) * d] = G
    return b.build(Q, float((B * W).sum()) if kappa is None else float(np.sum(kappa)))


def l0_point(V: np.ndarray) -> np.ndarray:
    """The statement's point (v, s = [v != 0]) of weights V."""
    return np.concatenate([V.reshape(-1), (V != 0).reshape(-1).astype(float)])


def hard_threshold(u: np.ndarray, lam: float, eta: float) -> np.ndarray:
    """prox_{eta lam ||.||_0}(u) = argmin_v ||v - u||^2 / (2 eta) + lam ||v||_0."""
    return np.where(u ** 2 > 2 * lam * eta, u, 0.0)
