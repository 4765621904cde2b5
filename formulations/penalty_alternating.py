"""Penalty form with alternating minimisation (SPAP-style), stated in cvxpy.

With a relaxed mask m in [0,1]^d (1 = kept) and weights v:
    min_{v, m}  (w - v)^T G (w - v) + rho * sum m (1 - m)
    s.t.  |v_e| <= M_e m_e,  sum m = k,  0 <= m <= 1.
The penalty rho sum m(1 - m) is zero exactly at binary m, so for rho large enough
the minimisers are integral (the penalty method drives m to {0,1}).  It is
concave in m, so it is minimised by alternating two convex steps:
    v-step  (m fixed):  the convex QP below  (= least-squares refit on the support)
    m-step  (v fixed):  linearise the penalty at m_t: min <rho (1 - 2 m_t) - s_t, m>,
                         an LP over the cardinality polytope with a vertex optimum,
where s_t rewards keeping large-saliency entries.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np


def v_step(w: np.ndarray, G: np.ndarray, m: np.ndarray, big_m: np.ndarray):
    v = cp.Variable(len(w))
    prob = cp.Problem(cp.Minimize(cp.quad_form(w - v, cp.psd_wrap(G))), [cp.abs(v) <= cp.multiply(big_m, m)])
    return prob, v


def m_step(linear_cost: np.ndarray, keep: int):
    m = cp.Variable(len(linear_cost))
    prob = cp.Problem(cp.Minimize(linear_cost @ m), [m >= 0, m <= 1, cp.sum(m) == keep])
    return prob, m


def penalty(m: np.ndarray, rho: float) -> float:
    return float(rho * np.sum(m * (1 - m)))
