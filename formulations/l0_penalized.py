"""l0-penalised least squares (cvxpy, big-M): the problem IHT / mAIHT attacks.

    min_v  (w - v)^T G (w - v) + lam ||v||_0
  = min_{v, s}  (w - v)^T G (w - v) + lam sum(s)   s.t.  |v_e| <= M_e s_e,  s in {0,1}^d.
The hard-threshold step of IHT is the exact prox of lam ||.||_0 at step eta:
keep u_e iff u_e^2 > 2 lam eta.  The cardinality-constrained form (||v||_0 <= k)
is recovered by tuning lam (mAIHT tracks it so that the count follows k).
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np


def l0_penalized(w: np.ndarray, G: np.ndarray, lam: float, big_m: np.ndarray):
    d = len(w)
    v = cp.Variable(d)
    s = cp.Variable(d, boolean=True)
    obj = cp.quad_form(w - v, cp.psd_wrap(G)) + lam * cp.sum(s)
    return cp.Problem(cp.Minimize(obj), [cp.abs(v) <= cp.multiply(big_m, s)]), v, s


def hard_threshold(u: np.ndarray, lam: float, eta: float) -> np.ndarray:
    """prox_{eta lam ||.||_0}(u) = argmin_v ||v - u||^2 / (2 eta) + lam ||v||_0."""
    return np.where(u ** 2 > 2 * lam * eta, u, 0.0)
