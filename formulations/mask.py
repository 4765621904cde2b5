"""The mask-selection problem of a sub-block and its statements.

With z_u = 1 meaning unit u is pruned, the sub-block objective (optprune.exact.subblock) is

    min_z  z^T Q z + c^T z + const   s.t.  sum_{u in g} z_u = p_g  (every group g),  z in {0,1}^n,

an MIQP with Q PSD.  Its statements:

* `mask_ip`          the integer program itself (MIQP).
* `mask_milp`        its exact MILP linearisation (McCormick + RLT; HiGHS solves it).
* `mask_relaxation`  the convex relaxation z in [0,1]^n (a QP: its optimum is a lower bound).
* `mask_oa_master`   the outer-approximation master: z and an epigraph variable eta; the solver
                     appends the Kelley cuts eta >= f(z_k) + grad f(z_k)^T (z - z_k).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .statement import Statement, StatementBuilder


@dataclass
class BinaryQP:
    """min z^T Q z + c^T z + const  s.t.  sum_{u in g} z_u = p_g (z = 1: pruned)."""

    Q: np.ndarray
    c: np.ndarray
    const: float
    groups: list[tuple[np.ndarray, int]]

    @property
    def n(self) -> int:
        return self.Q.shape[0]

    def value(self, z: np.ndarray) -> float:
        z = np.asarray(z, dtype=float)
        return float(z @ self.Q @ z + self.c @ z + self.const)

    def gradient(self, z: np.ndarray) -> np.ndarray:
        return 2 * self.Q @ np.asarray(z, float) + self.c

    def feasible(self, z: np.ndarray) -> bool:
        z = np.asarray(z)
        return bool(np.all((z == 0) | (z == 1))) and all(int(z[g].sum()) == p for g, p in self.groups)

    def lmo(self, grad: np.ndarray) -> np.ndarray:
        """argmin_{s in [0,1]^n, group sums} grad^T s: the p_g smallest entries of each group."""
        s = np.zeros(self.n)
        for g, p in self.groups:
            s[g[np.argsort(grad[g], kind="stable")[:p]]] = 1.0
        return s

    def scaled(self, s: float) -> "BinaryQP":
        return BinaryQP(self.Q / s, self.c / s, self.const / s, self.groups)

    def scale(self) -> float:
        """A scale that brings the data to O(1) for the solvers' tolerances."""
        return float(max(np.abs(self.Q).max(initial=0.0), np.abs(self.c).max(initial=0.0), 1e-300))


def _cardinality_rows(b: StatementBuilder, z: np.ndarray, qp: BinaryQP) -> None:
    for g, p in qp.groups:
        b.add_row(z[g], 1.0, p, p)


def mask_ip(qp: BinaryQP) -> Statement:
    """min z^T Q z + c^T z + const  s.t.  sum_{u in g} z_u = p_g,  z in {0,1}^n   (MIQP)."""
    b = StatementBuilder("mask integer program")
    z = b.add_vars("z", qp.n, 0, 1, qp.c, integer=True)
    _cardinality_rows(b, z, qp)
    return b.build(qp.Q, qp.const)


def mask_relaxation(qp: BinaryQP) -> Statement:
    """min z^T Q z + c^T z + const  s.t.  sum_{u in g} z_u = p_g,  0 <= z <= 1   (convex QP)."""
    b = StatementBuilder("mask relaxation")
    z = b.add_vars("z", qp.n, 0, 1, qp.c)
    _cardinality_rows(b, z, qp)
    return b.build(qp.Q, qp.const)


def linearised_pairs(qp: BinaryQP) -> tuple[np.ndarray, np.ndarray]:
    """The pairs i < j that need a product variable: Q_ij != 0, or i, j in one group (RLT)."""
    n = qp.n
    same_group = np.zeros((n, n), bool)
    for g, _ in qp.groups:
        same_group[np.ix_(g, g)] = True
    iu, ju = np.triu_indices(n, 1)
    keep = (qp.Q[iu, ju] != 0) | same_group[iu, ju]
    return iu[keep], ju[keep]


def mask_milp(qp: BinaryQP) -> Statement:
    """Exact MILP linearisation.  y_ij stands for z_i z_j (i < j); since z is binary,
        Q_ij > 0:  y_ij >= z_i + z_j - 1,  y_ij >= 0        Q_ij < 0:  y_ij <= z_i,  y_ij <= z_j
    make sum Q_ij y_ij >= sum Q_ij z_i z_j with equality at y = z z^T, so the optimum equals the
    MIQP's; z_i^2 = z_i puts Q_ii on the linear cost.  The RLT cuts z_i (sum_{j in g} z_j = p_g),
        sum_{j in g, j != i} y_ij = (p_g - 1) z_i   (i in g),
    are valid at y = z z^T and tighten the LP relaxation a lot.
        min (diag Q + c)^T z + sum_{i<j} 2 Q_ij y_ij + const."""
    iu, ju = linearised_pairs(qp)
    b = StatementBuilder("mask MILP linearisation")
    z = b.add_vars("z", qp.n, 0, 1, np.diag(qp.Q) + qp.c, integer=True)
    y = b.add_vars("y", len(iu), 0, 1, 2 * qp.Q[iu, ju])
    pair = {}
    for k, (i, j) in enumerate(zip(iu, ju)):
        pair[i, j] = pair[j, i] = y[k]
        q = qp.Q[i, j]
        if q > 0:
            b.add_row([y[k], z[i], z[j]], [1, -1, -1], lower=-1)
        elif q < 0:
            b.add_row([y[k], z[i]], [1, -1], upper=0)
            b.add_row([y[k], z[j]], [1, -1], upper=0)
    for g, p in qp.groups:
        b.add_row(z[g], 1.0, p, p)
        for i in g:
            others = [pair[i, j] for j in g if j != i]
            b.add_row(others + [z[i]], [1.0] * len(others) + [1.0 - p], 0, 0)
    return b.build(None, qp.const)


def milp_point(qp: BinaryQP, z: np.ndarray) -> np.ndarray:
    """The MILP point (z, y = z_i z_j) of a binary z: a feasible start for `mask_milp`."""
    iu, ju = linearised_pairs(qp)
    z = np.asarray(z, float)
    return np.concatenate([z, z[iu] * z[ju]])


def mask_oa_master(qp: BinaryQP) -> Statement:
    """Outer-approximation master: min eta over z in the cardinality set, eta >= lower (f >= 0 on a
    real sub-block, so lower = 0 when const >= 0); the Kelley cuts
        eta >= f(z_k) + grad f(z_k)^T (z - z_k)
    are appended by the solver (`oa_cut`).  Its optimum lower-bounds the MIQP (f is convex)."""
    b = StatementBuilder("mask outer-approximation master")
    z = b.add_vars("z", qp.n, 0, 1, 0.0, integer=True)
    b.add_vars("eta", 1, 0.0 if qp.const >= 0 else -np.inf, np.inf, 1.0)
    _cardinality_rows(b, z, qp)
    return b.build()


def diagonal_perturbation(qp: BinaryQP, kind: str = "shor") -> np.ndarray:
    """kind 'shor': the diagonal d of the Shor SDP relaxation's multipliers on diag(Z) = z,

        min <Q, Z> + c^T z   s.t.  [[1, z^T], [z, Z]] PSD,  diag(Z) = z,  sum_{u in g} z_u = p_g;

    kind 'max': the largest sum d with Q - diag(d) PSD (flattest convex reformulation).  Either (cvxpy with
    Clarabel) is shifted down by the smallest eigenvalue of Q - diag(d) when the solver left it
    negative, so Q - diag(d) is PSD exactly (float64 eigenvalues, margin 1e-9 of the scale).  With this d the
    reformulation's continuous relaxation is as tight as the SDP bound on the diagonal allows."""
    import cvxpy as cp

    s = qp.scale()
    Q, c = qp.Q / s, qp.c / s
    if kind == "max":
        d = cp.Variable(qp.n)
        cp.Problem(cp.Maximize(cp.sum(d)), [Q - cp.diag(d) >> 0]).solve(solver=cp.CLARABEL)
        dv = np.zeros(qp.n) if d.value is None else np.asarray(d.value, float)
    else:
        X = cp.Variable((qp.n + 1, qp.n + 1), symmetric=True)
        z, Z = X[0, 1:], X[1:, 1:]
        on_diagonal = cp.diag(Z) == z
        cons = [X >> 0, X[0, 0] == 1, on_diagonal] + [cp.sum(z[g]) == p for g, p in qp.groups]
        cp.Problem(cp.Minimize(cp.trace(Q @ Z) + c @ z), cons).solve(solver=cp.CLARABEL)
        dv = np.zeros(qp.n) if on_diagonal.dual_value is None else -np.asarray(on_diagonal.dual_value, float)
    shift = min(float(np.linalg.eigvalsh(Q - np.diag(dv))[0]), 0.0) - 1e-9
    return (dv + shift) * s


def convex_reformulation(qp: BinaryQP, d: np.ndarray | None = None) -> BinaryQP:
    """The quadratic convex reformulation (QCR): since z_i^2 = z_i on binaries,
        z^T Q z + c^T z = z^T (Q - diag d) z + (c + d)^T z,
    the same function on every binary z, still convex for Q - diag d PSD, and with a continuous
    relaxation as tight as d allows (d from `diagonal_perturbation`: the Shor SDP bound's diagonal)."""
    d = diagonal_perturbation(qp) if d is None else d
    return BinaryQP(qp.Q - np.diag(d), qp.c + d, qp.const, qp.groups)


def oa_cut(qp: BinaryQP, zk: np.ndarray) -> tuple[np.ndarray, float]:
    """Row (over [z, eta]) and lower side of the cut eta - grad^T z >= f(z_k) - grad^T z_k."""
    g = qp.gradient(zk)
    return np.concatenate([-g, [1.0]]), qp.value(zk) - float(g @ zk)


def relaxed_bound_certificate(qp: BinaryQP, x: np.ndarray) -> float:
    """Any point x gives a rigorous lower bound by convexity (the Frank-Wolfe dual bound):
        f(y) >= f(x) + grad f(x)^T (y - x) >= f(x) + min_{s in P} grad f(x)^T (s - x)   for y in P."""
    x = np.clip(np.asarray(x, float), 0.0, 1.0)
    g = qp.gradient(x)
    return qp.value(x) + float(g @ (qp.lmo(g) - x))


__all__ = ["BinaryQP", "convex_reformulation", "diagonal_perturbation", "mask_ip", "mask_milp", "mask_relaxation", "mask_oa_master", "milp_point", "oa_cut",
           "relaxed_bound_certificate", "linearised_pairs"]
