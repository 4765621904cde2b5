"""The exact MILP linearisation of the mask-only problem as a Pyomo model.

Same model as optprune.exact.solve_mask_milp (McCormick by the sign of Q_ij + RLT
cuts); Pyomo writes it as .lp or .mps for any MIP solver, and solves it with
HiGHS through the `appsi_highs` interface.
"""
from __future__ import annotations

import numpy as np
import pyomo.environ as pyo


def mask_milp_model(qp) -> pyo.ConcreteModel:
    n = qp.n
    Q, c = qp.Q, qp.c
    same = np.zeros((n, n), bool)
    for g, _ in qp.groups:
        same[np.ix_(g, g)] = True
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if Q[i, j] != 0 or same[i, j]]
    mdl = pyo.ConcreteModel()
    mdl.U = pyo.RangeSet(0, n - 1)
    mdl.P = pyo.Set(initialize=pairs, dimen=2)
    mdl.z = pyo.Var(mdl.U, domain=pyo.Binary)
    mdl.y = pyo.Var(mdl.P, bounds=(0, 1))
    mdl.obj = pyo.Objective(expr=sum((Q[i, i] + c[i]) * mdl.z[i] for i in range(n))
                            + sum(2 * Q[i, j] * mdl.y[i, j] for i, j in pairs) + qp.const)
    mdl.mc = pyo.ConstraintList()
    for i, j in pairs:
        if Q[i, j] > 0:
            mdl.mc.add(mdl.y[i, j] >= mdl.z[i] + mdl.z[j] - 1)
        elif Q[i, j] < 0:
            mdl.mc.add(mdl.y[i, j] <= mdl.z[i])
            mdl.mc.add(mdl.y[i, j] <= mdl.z[j])
    mdl.card = pyo.ConstraintList()
    mdl.rlt = pyo.ConstraintList()
    for g, p in qp.groups:
        g = [int(u) for u in g]
        mdl.card.add(sum(mdl.z[u] for u in g) == p)
        for i in g:
            mdl.rlt.add(sum(mdl.y[min(i, j), max(i, j)] for j in g if j != i) == (p - 1) * mdl.z[i])
    return mdl


def write_model(qp, path: str) -> str:
    """Write the MILP to `path` (.lp or .mps by suffix)."""
    fmt = "mps" if path.endswith(".mps") else "cpxlp"
    mask_milp_model(qp).write(path, format=fmt, io_options={"symbolic_solver_labels": True})
    return path
