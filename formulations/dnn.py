"""The doubly nonnegative (DNN) relaxation of the mask problem (`mask.BinaryQP`): the Shor SDP with the
products of the cardinality rows (RLT) and nonnegative products,

    min <C, Y>  s.t.  Y = [[1, z^T], [z, Z]] PSD,  Y >= 0 (entrywise),  diag(Z) = z,
                      sum_{v in g} z_v = p_g,   sum_{v in g} Z_uv = p_g z_u   (every group g, every u),

with C = [[const, c^T / 2], [c / 2, Q]].  Every feasible binary z lifts to Y = (1, z)(1, z)^T with
<C, Y> = z^T Q z + c^T z + const, so the optimum is a lower bound on the MIQP.  The linear rows are
A(Y) = b, A acting on vec(Y) with every row a symmetric matrix.

Any dual point bounds it, whether or not a solver converged (weak duality): for y and N >= 0,

    <C, Y> = b^T y + <C - A^* y - N, Y> + <N, Y>  >=  b^T y + lambda_min(C - A^* y - N) tr(Y),

and tr(Y) = 1 + sum_u z_u lies in `trace` on the feasible set (`dual_bound`, with lambda_min's float64
rounding charged).  The linear rows alone give Y e_g = 0 for e_g = (-p_g, 1 on g): every feasible Y lies on
the face {F R F^T : R PSD} (F, `face`: an orthonormal basis of the complement of the e_g), so the minimum
eigenvalue above is taken of F^T (C - A^* y - N) F, and no feasible Y is positive definite (facial
reduction: solvers that need an interior point struggle without it).  `optprune.exact.dnn` solves it by
ADMM; `to_cvxpy` emits it for small instances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .mask import BinaryQP


@dataclass
class DNNRelaxation:
    """min <C, Y> s.t. A vec(Y) = b, Y PSD, Y >= 0; tr(Y) in `trace` on every feasible Y."""

    C: np.ndarray
    A: sp.csr_matrix
    b: np.ndarray
    trace: tuple[float, float]
    face: np.ndarray              # (n + 1, k) orthonormal: every feasible Y = face R face^T
    null: np.ndarray              # (n + 1, n + 1 - k) orthonormal: the complement (Y null = 0)

    @property
    def size(self) -> int:
        return self.C.shape[0]

    def lift(self, z: np.ndarray) -> np.ndarray:
        """Y = (1, z)(1, z)^T: a binary point's image (feasible when z is)."""
        x = np.concatenate([[1.0], np.asarray(z, float)])
        return np.outer(x, x)

    def residual(self, Y: np.ndarray) -> np.ndarray:
        return self.A @ Y.ravel() - self.b


def dnn_relaxation(qp: BinaryQP) -> DNNRelaxation:
    """The statement of the module doc for `qp` (z = 1: pruned; groups: the cardinality rows)."""
    n = qp.n
    size = n + 1
    rows, cols, vals, b = [], [], [], []

    def add(entries, rhs):
        k = len(b)
        for i, j, v in entries:
            pairs = [(i, j, v)] if i == j else [(i, j, v / 2), (j, i, v / 2)]
            for a, c, w in pairs:
                rows.append(k), cols.append(a * size + c), vals.append(w)
        b.append(rhs)

    add([(0, 0, 1.0)], 1.0)
    for u in range(1, size):
        add([(u, u, 1.0), (0, u, -1.0)], 0.0)                                  # diag(Z) = z
    for g, p in qp.groups:
        members = np.asarray(g) + 1
        add([(0, v, 1.0) for v in members], float(p))                          # sum_g z = p_g
        for u in range(1, size):                                               # Z_u,g 1 = p_g z_u
            add([(u, v, 1.0) for v in members] + [(0, u, -float(p))], 0.0)
    A = sp.csr_matrix((vals, (rows, cols)), shape=(len(b), size * size))
    C = np.zeros((size, size))
    C[0, 0], C[0, 1:], C[1:, 0], C[1:, 1:] = qp.const, qp.c / 2, qp.c / 2, (qp.Q + qp.Q.T) / 2
    covered = np.zeros(n, bool)
    for g, _ in qp.groups:
        covered[np.asarray(g)] = True
    fixed = 1.0 + sum(p for _, p in qp.groups)
    null = np.zeros((size, len(qp.groups)))
    for k, (g, p) in enumerate(qp.groups):
        null[0, k], null[np.asarray(g) + 1, k] = -p, 1.0
    face = scipy.linalg.null_space(null.T) if qp.groups else np.eye(size)
    return DNNRelaxation(C, A, np.asarray(b, float), (fixed, fixed + float((~covered).sum())), face,
                         scipy.linalg.orth(null) if qp.groups else np.zeros((size, 0)))


def on_face(M: np.ndarray, null: np.ndarray) -> np.ndarray:
    """P M P for P = I - E E^T (E = `null`, orthonormal), symmetrised, by low-rank updates: its spectrum is
    that of F^T M F (F the face's basis) and zeros on E."""
    M = (M + M.T) / 2
    ME = M @ null
    PMP = M - null @ ME.T - ME @ null.T + null @ (null.T @ ME) @ null.T
    return (PMP + PMP.T) / 2


def dual_bound(rel: DNNRelaxation, y: np.ndarray, N: np.ndarray) -> float:
    """b^T y + lambda_min(F^T (C - A^* y - N) F) tr(Y) at its worst over `trace` (N clipped to >= 0 and
    symmetrised; F the face), lambda_min lowered by a float64 rounding margin (and F's rounding, which
    the margin of 64 n eps covers for an orthonormal F): a rigorous lower bound for any y."""
    N = np.clip((N + N.T) / 2, 0.0, None)
    M = rel.C - (rel.A.T @ y).reshape(rel.C.shape) - N
    c = 2 * float(np.abs(M).sum(1).max()) + 1.0      # F^T M F's spectrum: that of P M P + c E E^T, c large
    M = on_face(M, rel.null) + c * rel.null @ rel.null.T
    low = float(np.linalg.eigvalsh(M)[0]) - 64 * M.shape[0] * np.finfo(np.float64).eps * float(np.abs(M).sum(1).max())
    return float(rel.b @ y) + low * (rel.trace[0] if low >= 0 else rel.trace[1])


def to_cvxpy(rel: DNNRelaxation):
    """(problem, Y) in cvxpy (an SDP with entrywise nonnegativity: Clarabel or SCS), for small instances;
    Y = F R F^T with R PSD (the face), so that the SDP has an interior."""
    import cvxpy as cp

    R = cp.Variable((rel.face.shape[1],) * 2, symmetric=True)
    Y = rel.face @ R @ rel.face.T
    cons = [R >> 0, Y >= 0, rel.A @ cp.vec(Y, order="C") == rel.b]
    return cp.Problem(cp.Minimize(cp.trace(rel.C @ Y)), cons), Y


__all__ = ["DNNRelaxation", "dnn_relaxation", "dual_bound", "on_face", "to_cvxpy"]
