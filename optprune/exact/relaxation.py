"""Convex relaxation lower bound of a sub-block (HiGHS convex QP + a certificate).

Relaxation:  min_{z in [0,1]^n, sum_{u in g} z_u = p_g}  z^T Q z + c^T z + const  (Q PSD).
Any point x (feasible or not) certifies a lower bound on it, and so on the
integer optimum, by convexity:

    f(y) >= f(x) + grad f(x)^T (y - x) >= f(x) + min_{s in P} grad f(x)^T (s - x)   for all y in P,

the minimum being the linear minimisation oracle of P (the p_g smallest gradient
entries of each group).  This is the Frank-Wolfe dual bound; it makes the bound
rigorous whatever accuracy the QP solver reached.
"""
from __future__ import annotations

import numpy as np

from .highs_model import HighsModel
from .subblock import BinaryQP


def certified_lower_bound(qp: BinaryQP, x: np.ndarray) -> float:
    x = np.clip(np.asarray(x, float), 0.0, 1.0)
    g = 2 * qp.Q @ x + qp.c
    s = qp.lmo(g)
    return qp.value(x) + float(g @ (s - x))


def relaxation_bound(qp: BinaryQP, time_limit: float = 60.0) -> tuple[float, np.ndarray]:
    """(certified lower bound, relaxed minimiser) from HiGHS's convex QP solver."""
    model = HighsModel(time_limit=time_limit)
    z = model.add_cols(qp.n, 0.0, 1.0, qp.c)
    for g, p in qp.groups:
        model.add_row(z[g], np.ones(len(g)), p, p)
    model.set_hessian(2 * qp.Q)
    out = model.solve()
    x = out["x"] if out["x"] is not None else qp.lmo(qp.c)
    return certified_lower_bound(qp, x), x
