"""Integer programs (cvxpy).

Mask only (z_u = 1: unit u pruned; groups g with prune counts p_g):
    min_z  z^T Q z + c^T z + const   s.t.  sum_{u in g} z_u = p_g,  z in {0,1}^n.
This is an MIQP; HiGHS solves MILPs, so `mask_ip_linearized` states the exact
linearisation (y_ij = z_i z_j, one-sided McCormick by the sign of Q_ij, RLT
cuts sum_{j in g, j != i} y_ij = (p_g - 1) z_i), which cvxpy can hand to HiGHS.

Mask + refit for one row (w, G), big-M M_e (see optprune.exact.solve for a valid M):
    min_{z, v}  (w - v)^T G (w - v)   s.t.  |v_e| <= M_e (1 - z_e),  group counts on z.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np


def _groups(z, qp):
    return [cp.sum(z[g]) == p for g, p in qp.groups]


def mask_ip(qp) -> tuple[cp.Problem, cp.Variable]:
    z = cp.Variable(qp.n, boolean=True)
    obj = cp.quad_form(z, cp.psd_wrap(qp.Q)) + qp.c @ z + qp.const
    return cp.Problem(cp.Minimize(obj), _groups(z, qp)), z


def mask_ip_linearized(qp) -> tuple[cp.Problem, cp.Variable]:
    n = qp.n
    z = cp.Variable(n, boolean=True)
    iu, ju = np.triu_indices(n, 1)
    same = np.zeros((n, n), bool)
    for g, _ in qp.groups:
        same[np.ix_(g, g)] = True
    keep = (qp.Q[iu, ju] != 0) | same[iu, ju]
    iu, ju = iu[keep], ju[keep]
    y = cp.Variable(len(iu), nonneg=True)
    q = qp.Q[iu, ju]
    cons = _groups(z, qp) + [y <= 1]
    pos, neg = np.nonzero(q > 0)[0], np.nonzero(q < 0)[0]
    if len(pos):
        cons.append(y[pos] >= z[iu[pos]] + z[ju[pos]] - 1)
    if len(neg):
        cons += [y[neg] <= z[iu[neg]], y[neg] <= z[ju[neg]]]
    where = {}
    for k, (i, j) in enumerate(zip(iu, ju)):
        where.setdefault(i, []).append(k)
        where.setdefault(j, []).append(k)
    for g, p in qp.groups:
        gset = set(int(u) for u in g)
        for i in g:
            ks = [k for k in where.get(int(i), []) if int(iu[k]) in gset and int(ju[k]) in gset]
            cons.append(cp.sum(y[ks]) == (p - 1) * z[i] if ks else (p - 1) * z[i] == 0)
    obj = cp.sum(cp.multiply(np.diag(qp.Q) + qp.c, z)) + 2 * q @ y + qp.const
    return cp.Problem(cp.Minimize(obj), cons), z


def refit_ip(w: np.ndarray, G: np.ndarray, prune: int, big_m: np.ndarray) -> tuple[cp.Problem, cp.Variable, cp.Variable]:
    d = len(w)
    z = cp.Variable(d, boolean=True)
    v = cp.Variable(d)
    obj = cp.quad_form(w - v, cp.psd_wrap(G))
    cons = [cp.abs(v) <= cp.multiply(big_m, 1 - z), cp.sum(z) == prune]
    return cp.Problem(cp.Minimize(obj), cons), z, v
