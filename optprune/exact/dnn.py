"""ADMM on the DNN relaxation (`formulations.dnn`), with a rigorous bound at every check.

Splitting Y (affine: A vec(Y) = b) = X (PSD, on the relaxation's face) = W (entrywise >= 0), with scaled
duals U, V and penalty rho:

    Y <- Proj_affine((X - U + W - V) / 2 - C / (2 rho)),   X <- Proj_face(Y + U),   W <- max(Y + V, 0),
    U <- U + Y - X,   V <- V + Y - W,

rho balanced between the primal and dual residuals every 10 steps, over-relaxed (Y replaced by
relax Y + (1 - relax) X in the X- and U-steps, likewise for W).  At a check the duals give S = -rho U (PSD
part) and N = max(-rho V, 0); y is the least-squares solution of A^* y = C - S_+ - N, then `restore` rounds of
alternating projections (N <- max(C - A^* y - S, 0), S <- Proj_face(C - A^* y - N), y again) move towards
dual feasibility, and `dual_bound` turns each (y, N) into a rigorous bound.  The best bound met is
returned: valid however early the iterations stop; they only decide how tight it is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import splu

from formulations.dnn import DNNRelaxation, dnn_relaxation, dual_bound, on_face
from formulations.mask import BinaryQP


@dataclass
class DNNOutcome:
    bound: float          # rigorous lower bound (best over the checks)
    primal: float         # <C, Y> at the last iterate (not a bound; it approaches the relaxation's optimum)
    residual: float       # max |Y - X|, |Y - W| at the last iterate
    iterations: int
    seconds: float


def _psd_part(M: np.ndarray, null: np.ndarray) -> np.ndarray:
    """The projection of M onto the face {Y PSD : Y E = 0} (E = `null`, orthonormal): Proj_PSD(P M P) with
    P = I - E E^T (= F Proj_PSD(F^T M F) F^T for F the face's basis)."""
    e, V = np.linalg.eigh(on_face(M, null))
    return (V * np.clip(e, 0.0, None)) @ V.T


def solve_dnn(rel: DNNRelaxation, iters: int = 2000, seconds: float | None = None, start: np.ndarray | None = None,
              check_every: int = 50, rho: float | None = None, relax: float = 1.6, restore: int = 3) -> DNNOutcome:
    """ADMM of the module doc from the lift of the binary point `start` (default 0), for `iters` steps or
    `seconds`; C should be O(1) (scale the problem first)."""
    t0 = time.perf_counter()
    lu = splu((rel.A @ rel.A.T).tocsc())
    shape, C = rel.C.shape, rel.C

    def affine(M):
        v = M.ravel()
        return (v - rel.A.T @ lu.solve(rel.A @ v - rel.b)).reshape(shape)

    def check():
        S, N = _psd_part(-rho * U, rel.null), np.clip(-rho * V, 0.0, None)
        N = (N + N.T) / 2
        best = -np.inf
        for _ in range(restore):       # alternating projections towards dual feasibility
            y = lu.solve(rel.A @ (C - S - N).ravel())
            best = max(best, dual_bound(rel, y, N))
            rest = C - (rel.A.T @ y).reshape(shape)
            N = np.clip(rest - S, 0.0, None)
            S = _psd_part(rest - N, rel.null)
        return best

    rho = 0.1 * float(np.abs(np.diag(C)).mean()) if rho is None else rho
    X = rel.lift(np.zeros(shape[0] - 1) if start is None else start)
    W, U, V = X.copy(), np.zeros(shape), np.zeros(shape)
    best, k = -np.inf, 0
    for k in range(1, iters + 1):
        Y = affine((X - U + W - V) / 2 - C / (2 * rho))
        X_old, W_old = X, W
        YX, YW = relax * Y + (1 - relax) * X, relax * Y + (1 - relax) * W       # over-relaxation
        X, W = _psd_part(YX + U, rel.null), np.clip(YW + V, 0.0, None)
        U, V = U + YX - X, V + YW - W
        if k % 10 == 0:
            rho, U, V = _balance(rho, U, V, np.hypot(np.linalg.norm(Y - X), np.linalg.norm(Y - W)),
                                 rho * np.hypot(np.linalg.norm(X - X_old), np.linalg.norm(W - W_old)))
        last = k == iters or (seconds is not None and time.perf_counter() - t0 > seconds)
        if k % check_every == 0 or last:
            best = max(best, check())
        if last:
            break
    residual = max(float(np.abs(Y - X).max()), float(np.abs(Y - W).max())) if k else float("inf")
    return DNNOutcome(best, float((C * X).sum()), residual, k, time.perf_counter() - t0)


def _balance(rho: float, U: np.ndarray, V: np.ndarray, primal: float, dual: float, ratio: float = 5.0,
             factor: float = 1.5):
    """Residual balancing: raise rho when the primal residual dominates, lower it when the dual does
    (the scaled duals U, V rescaled so that rho U and rho V stay put)."""
    if primal > ratio * dual:
        return rho * factor, U / factor, V / factor
    if dual > ratio * primal:
        return rho / factor, U * factor, V * factor
    return rho, U, V


MAX_PRODUCT_ROWS = 20000      # the statement's product rows (groups x inputs): AA^T is factorised once


def row_groups(problem, pattern) -> list[tuple[np.ndarray, int]]:
    """The cardinality groups of one row (columns, units pruned), after checking that a row's DNN bound
    applies: the mask-only problem of an entrywise pattern whose rows are independent, with at most
    MAX_PRODUCT_ROWS products.  Raises ValueError saying which does not hold."""
    from .row_bounds import rows_independent

    if problem.dense_target:
        raise ValueError("the DNN bound is for the mask problem of (W, G), not a dense-target problem")
    if not (pattern.entrywise and rows_independent(pattern)):
        raise ValueError(f"the DNN bound needs an entrywise pattern whose rows are independent, not {pattern.name}")
    cols = problem.shape[1]
    ids, p = pattern.group_ids(1, cols)[0].numpy(), pattern.pruned_per_group(1, cols)
    groups = [(np.flatnonzero(ids == g), p) for g in np.unique(ids)]
    if len(groups) * cols > MAX_PRODUCT_ROWS:
        raise ValueError(f"the DNN bound of a {pattern.name} row of {cols} inputs would state {len(groups) * cols} "
                         f"cardinality products (at most {MAX_PRODUCT_ROWS}): it is for per-row patterns and "
                         "narrow N:M rows")
    return groups


def row_binary_qp(problem, pattern, row: int) -> BinaryQP:
    """Row `row` of a mask-only problem (W, G) as a BinaryQP (`row_groups` checks that it applies):
    z = 1 pruned, min (w o z)^T G (w o z) = z^T D_w G D_w z, one cardinality row per group of the row."""
    groups = row_groups(problem, pattern)
    W, G = problem.float64()
    w = W[row]
    return BinaryQP(w[:, None] * G * w[None, :], np.zeros(len(w)), 0.0, groups)


def dnn_row_bound(problem, pattern, row: int, iters: int = 2000, seconds: float | None = None,
                  start: np.ndarray | None = None) -> DNNOutcome:
    """The DNN relaxation's rigorous bound on one row's mask-only error (absolute units), by `solve_dnn` on
    the row's problem scaled to O(1), from the row's keep mask `start` (boolean, True = kept); at least 0,
    which bounds every row's error (G is PSD) when the ADMM has not yet risen above it."""
    qp = row_binary_qp(problem, pattern, row)
    s = float(np.diag(qp.Q).mean())
    out = solve_dnn(dnn_relaxation(qp.scaled(s)), iters, seconds, None if start is None else 1.0 - start)
    return DNNOutcome(max(out.bound, 0.0) * s, out.primal * s, out.residual, out.iterations, out.seconds)
