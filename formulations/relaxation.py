"""Convex relaxation (cvxpy): the integrality of z is dropped.

    min_z  z^T Q z + c^T z + const   s.t.  0 <= z <= 1,  sum_{u in g} z_u = p_g.
Q is PSD, so this is a convex QP; its optimum lower-bounds the integer optimum.
`optprune.exact.relaxation` solves it with HiGHS and certifies the bound by the
Frank-Wolfe dual inequality; at LLM scale SparseFW runs FW on the same set.
"""
from __future__ import annotations

import cvxpy as cp


def mask_relaxation(qp) -> tuple[cp.Problem, cp.Variable]:
    z = cp.Variable(qp.n)
    obj = cp.quad_form(z, cp.psd_wrap(qp.Q)) + qp.c @ z + qp.const
    cons = [z >= 0, z <= 1] + [cp.sum(z[g]) == p for g, p in qp.groups]
    return cp.Problem(cp.Minimize(obj), cons), z
