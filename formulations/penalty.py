"""Penalty form with alternating minimisation: the problem SPAP descends (structured pruning).

Keep k of the c column units of W (units of `group` columns), refit the rest.  With a relaxed keep
vector m in [0,1]^c (constant on units), d_j = G_jj and the dampening lam = percdamp * mean diag G:

    L_rho(V, m) = tr((W - V) G (W - V)^T) + lam ||V||_F^2 + rho sum_j (1 - m_j) d_j ||V_:,j||^2
    s.t.          sum_units m_u = k,   0 <= m <= 1.

The penalty vanishes on the kept columns and drives the others to zero as rho grows.  L_rho is a
convex QP in V for fixed m and linear in m for fixed V, so it is minimised alternately:
    V-step  `penalty_v_step`:  min_V L_rho(V, m)  (one QP per row; closed form V = W G (G + lam I + rho D)^-1)
    m-step  `penalty_m_step`:  min_m L_rho(V, m)  (an LP over the cardinality polytope; a vertex = top-k units)
"""
from __future__ import annotations

import numpy as np

from .statement import Statement, StatementBuilder


def penalty_objective(W, G, V, m, rho: float, d, lam: float) -> float:
    D = W - V
    return float(((D @ G) * D).sum() + lam * (V * V).sum() + rho * ((1 - m) * d * (V * V).sum(0)).sum())


def penalty_v_step(W: np.ndarray, G: np.ndarray, m: np.ndarray, rho: float, d: np.ndarray, lam: float,
                   B: np.ndarray | None = None, kappa: np.ndarray | None = None) -> Statement:
    """min over V (R x c, row-major) of L_rho(V, m): Q = blockdiag_b (G + lam I + rho diag((1 - m) d));
    a dense target's linear term B = W C and constant kappa replace W G and w^T G w."""
    R, c = W.shape
    b = StatementBuilder("penalty V-step")
    B = W @ G if B is None else B
    b.add_vars("V", R * c, -np.inf, np.inf, (-2 * B).reshape(-1))
    H = G + lam * np.eye(c) + rho * np.diag((1 - m) * d)
    Q = np.kron(np.eye(R), H)
    return b.build(Q, float((B * W).sum()) if kappa is None else float(np.sum(kappa)))


def penalty_m_step(V: np.ndarray, d: np.ndarray, keep_units: int, group: int, rho: float,
                   const: float = 0.0) -> Statement:
    """min over unit keep values mu in [0,1] of -rho sum_u mu_u sum_{j in u} d_j ||V_:,j||^2 + const,
    sum mu = keep_units (const: the rest of L_rho, which m does not change)."""
    col = d * (V * V).sum(0)
    unit = col.reshape(-1, group).sum(1)
    b = StatementBuilder("penalty m-step")
    mu = b.add_vars("m", len(unit), 0.0, 1.0, -rho * unit)
    b.add_row(mu, 1.0, keep_units, keep_units)
    return b.build(None, const + rho * float(col.sum()))
