"""Mask + refit of a sub-block: the kept weights are re-solved with the mask.

Rows b of the sub-block, weights v_b free on the entries that may stay nonzero (the window's units
and the entries the base mask keeps), zero elsewhere; unit u of an entry e(b, j) pruned iff z_u = 1:

    min_{z, v}  sum_b (w_b - v_b)^T G (w_b - v_b)     (dense target: sum_b v_b^T G v_b - 2 b_b^T v_b + kappa_b)
    s.t.        |v_bj| <= M_bj (1 - z_u(b,j)),   sum_{u in g} z_u = p_g,   z in {0,1}^n.

M_bj is rigorous: with U an upper bound on the optimum and G positive definite, every optimal v has
(w - v)^T G (w - v) <= U per row, hence |w_j - v_j| <= sqrt(U (G^-1)_jj); for a dense target the same
holds around w* = G^-1 b (the row's error is (v - w*)^T G (v - w*) plus a nonnegative rest).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .statement import Statement, StatementBuilder


@dataclass
class RefitData:
    W: np.ndarray            # R x d rows of the sub-block
    G: np.ndarray            # d x d
    unit_of: np.ndarray      # R x d: the unit of each entry, -1 where the entry is fixed
    free: np.ndarray         # R x d: entries whose weight may be nonzero
    big_m: np.ndarray        # R x d
    groups: list[tuple[np.ndarray, int]]
    n_units: int
    B: np.ndarray | None = None        # R x d linear term of a dense target (None: B = W G)
    kappa: np.ndarray | None = None    # R: each row's error at v = 0 (None: w^T G w)
    W_star: np.ndarray | None = None   # R x d unconstrained minimisers (None: W)

    def row_value_grad(self, r: int, v: np.ndarray) -> tuple[float, np.ndarray]:
        """(f_r(v), grad f_r(v)) of row r's error."""
        if self.B is None:
            D = self.W[r] - v
            return float(D @ self.G @ D), -2 * self.G @ D
        Gv = self.G @ v
        return float(v @ Gv - 2 * self.B[r] @ v + self.kappa[r]), 2 * (Gv - self.B[r])

    def free_entries(self) -> tuple[np.ndarray, np.ndarray]:
        return np.nonzero(self.free)


def _refit_variables(b: StatementBuilder, data: RefitData, v_cost=0.0) -> tuple[np.ndarray, np.ndarray]:
    z = b.add_vars("z", data.n_units, 0, 1, 0.0, integer=True)
    fb, fj = data.free_entries()
    M = data.big_m[fb, fj]
    v = b.add_vars("v", len(fb), -M, M, v_cost)
    for g, p in data.groups:
        b.add_row(z[g], 1.0, p, p)
    for k, (bb, j) in enumerate(zip(fb, fj)):
        u = data.unit_of[bb, j]
        if u >= 0:   # |v| <= M (1 - z_u)
            b.add_row([v[k], z[u]], [1.0, M[k]], upper=M[k])
            b.add_row([v[k], z[u]], [-1.0, M[k]], upper=M[k])
    return z, v


def refit_ip(data: RefitData) -> Statement:
    """The mask + refit integer program (MIQP): objective sum_b v_bF^T G_FF v_bF - 2 (G w_b)_F^T v_bF + w_b^T G w_b."""
    b = StatementBuilder("mask + refit integer program")
    fb, fj = data.free_entries()
    GW = data.W @ data.G if data.B is None else data.B
    z, v = _refit_variables(b, data, -2 * GW[fb, fj])
    Q = np.zeros((len(b.cost), len(b.cost)))
    for row in range(data.W.shape[0]):
        k = v[fb == row]
        cols = fj[fb == row]
        Q[np.ix_(k, k)] = data.G[np.ix_(cols, cols)]
    return b.build(Q, float((GW * data.W).sum()) if data.B is None else float(data.kappa.sum()))


def refit_oa_master(data: RefitData) -> Statement:
    """Outer-approximation master: min sum_b eta_b over (z, v) as above; the cuts
        eta_b >= f_b(v_k) + grad f_b(v_k)^T (v_b - v_kb),  grad f_b = -2 G (w_b - v_b),
    taken at fixed-support least-squares optima (Duran-Grossmann), are appended by the solver."""
    b = StatementBuilder("mask + refit outer-approximation master")
    _refit_variables(b, data)
    b.add_vars("eta", data.W.shape[0], 0.0, np.inf, 1.0)
    return b.build()


def refit_cuts(data: RefitData, master: Statement, V: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows (over the master's variables) and lower sides of the cuts at V, objective divided by scale."""
    fb, fj = data.free_entries()
    v_idx = -np.ones(data.W.shape, dtype=int)
    v_idx[fb, fj] = np.arange(master.blocks["v"].start, master.blocks["v"].stop)
    eta = np.arange(master.blocks["eta"].start, master.blocks["eta"].stop)
    rows, lower = np.zeros((data.W.shape[0], master.n)), np.zeros(data.W.shape[0])
    for r in range(data.W.shape[0]):
        value, grad = data.row_value_grad(r, V[r])
        grad = grad[data.free[r]] / scale
        rows[r, eta[r]] = 1.0
        rows[r, v_idx[r][data.free[r]]] = -grad
        lower[r] = value / scale - grad @ V[r][data.free[r]]
    return rows, lower


def perspective_relaxation(b: np.ndarray, kappa: float, G: np.ndarray, lam: np.ndarray, keep: int):
    """The perspective relaxation of one row's mask + refit problem (a cvxpy problem: its perspective terms
    are second-order cones, outside the QP statements above), with A = G - diag(lam) PSD, lam >= 0:

        min_{v, k}  v^T A v + sum_j lam_j v_j^2 / k_j - 2 b^T v + kappa   s.t.  0 <= k <= 1,  sum_j k_j <= keep.

    At binary k (v_j = 0 where k_j = 0) it is the row's refit error, so its optimum bounds the optimum from
    below; `optprune.exact.row_bounds.perspective_bound` solves it at layer scale with a certificate."""
    import cvxpy as cp

    d = len(b)
    v, k = cp.Variable(d), cp.Variable(d)
    A = G - np.diag(lam)
    terms = [cp.quad_over_lin(v[j], k[j]) * lam[j] for j in range(d) if lam[j] > 0]
    objective = cp.quad_form(v, cp.psd_wrap(0.5 * (A + A.T))) + cp.sum(cp.hstack(terms)) - 2 * b @ v + kappa
    return cp.Problem(cp.Minimize(objective), [k >= 0, k <= 1, cp.sum(k) <= keep])
