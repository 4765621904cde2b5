"""Exact solution of sub-block problems with HiGHS (MILP only: HiGHS has no MIQP).

Mask only, min z^T Q z + c^T z over binary z with group cardinalities, two exact routes:

* ``milp`` - exact linearisation.  y_ij stands for z_i z_j (i < j).  Since z is
  binary, the one-sided McCormick inequalities
      Q_ij > 0:  y_ij >= z_i + z_j - 1,  y_ij >= 0
      Q_ij < 0:  y_ij <= z_i,  y_ij <= z_j
  make sum Q_ij y_ij >= sum Q_ij z_i z_j with equality at y = z z^T, so the MILP
  optimum equals the quadratic one.  The RLT cuts z_i * (sum_{j in g} z_j = p_g),
      sum_{j in g, j != i} y_ij = (p_g - 1) z_i   (i in g),
  are valid for y = z z^T and tighten the LP relaxation a lot.
* ``oa`` - outer approximation (Kelley cuts).  f is convex (Q = D G D is PSD), so
  f(z) >= f(z_k) + grad f(z_k)^T (z - z_k) for every z_k; the master MILP
  min eta over these cuts is a lower bound, f at its solution an upper bound, and
  the loop stops when they meet (a repeated z_k closes the gap, so it is finite).

Mask + refit, min_{z, v} sum_i (w_i - v_i)^T G (w_i - v_i), v_e = 0 where z_e = 1:
outer approximation with big-M links |v_e| <= M_e (1 - z_e).  M_e is rigorous:
with U an upper bound on the optimum and G positive definite, every optimal v
has (w - v)^T G (w - v) <= U per row, hence |w_e - v_e| <= sqrt(U (G^-1)_ee).
Cuts are taken at the fixed-support least-squares optima (Duran-Grossmann OA),
so the loop is finite and ends with lower bound = upper bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .highs_model import INF, HighsModel
from .subblock import BinaryQP, SubBlock


@dataclass
class ExactResult:
    status: str            # "optimal" when bound and optimum agree within tol, else why not
    optimum: float         # best objective found (an upper bound)
    bound: float           # proven lower bound
    z: np.ndarray          # best unit vector found (1 = pruned)
    seconds: float
    method: str
    iterations: int = 1
    weights: np.ndarray | None = field(default=None, repr=False)  # refit: rows x d

    @property
    def gap(self) -> float:
        return max(0.0, self.optimum - self.bound)

    @property
    def certified(self) -> bool:
        return self.status == "optimal"


def _close(ub: float, lb: float, tol: float) -> bool:
    return ub - lb <= tol * max(1.0, abs(ub))


def _scale(qp: BinaryQP) -> float:
    return float(max(np.abs(qp.Q).max(initial=0.0), np.abs(qp.c).max(initial=0.0), 1e-300))


def solve_mask_milp(qp: BinaryQP, z0: np.ndarray | None = None, time_limit: float = 60.0,
                    tol: float = 1e-7) -> ExactResult:
    """Exact McCormick + RLT linearisation, one HiGHS MILP (z0: optional feasible start)."""
    t0 = time.perf_counter()
    s = _scale(qp)
    Q, c = qp.Q / s, qp.c / s
    n = qp.n
    model = HighsModel(time_limit=time_limit)
    z = model.add_cols(n, 0, 1, np.diag(Q) + c, integer=True)
    same_group = np.zeros((n, n), bool)
    for g, _ in qp.groups:
        same_group[np.ix_(g, g)] = True
    iu, ju = np.triu_indices(n, 1)
    keep = (Q[iu, ju] != 0) | same_group[iu, ju]
    iu, ju = iu[keep], ju[keep]
    y = model.add_cols(len(iu), 0, 1, 2 * Q[iu, ju])
    pair = {}
    for k, (i, j) in enumerate(zip(iu, ju)):
        pair[i, j] = pair[j, i] = y[k]
        q = Q[i, j]
        if q > 0:
            model.add_row([y[k], z[i], z[j]], [1, -1, -1], lower=-1)
        elif q < 0:
            model.add_row([y[k], z[i]], [1, -1], upper=0)
            model.add_row([y[k], z[j]], [1, -1], upper=0)
    for g, p in qp.groups:
        model.add_row(z[g], np.ones(len(g)), p, p)
        for i in g:
            others = [pair[i, j] for j in g if j != i]
            model.add_row(others + [z[i]], [1.0] * len(others) + [1.0 - p], 0, 0)
    start = None
    if z0 is not None and qp.feasible(z0):
        z0 = np.asarray(z0, float)
        start = np.concatenate([z0, z0[iu] * z0[ju]])
    out = model.solve(start)
    if out["x"] is None:
        return ExactResult(out["status"], np.inf, -np.inf, np.zeros(n), time.perf_counter() - t0, "milp")
    zb = np.round(out["x"][:n])
    ub = qp.value(zb)
    lb = out["bound"] * s + qp.const
    status = "optimal" if _close(ub, lb, tol) else out["status"]
    return ExactResult(status, ub, min(lb, ub), zb, time.perf_counter() - t0, "milp",
                       iterations=out["nodes"])


def _outer_approximation(model: HighsModel, n: int, evaluate, add_cut, ub: float, best, bound_scale: float,
                         t0: float, time_limit: float, tol: float, max_iter: int):
    """The OA loop shared by both OA solvers.  The master MILP's optimum (times
    bound_scale) is a lower bound; evaluate(z_k) -> (f_k, cut point) gives an upper
    bound and the point where the next cut is taken.  Returns (lb, ub, best, status, iterations)."""
    lb, status, it = -np.inf, "iteration_limit", 0
    for it in range(1, max_iter + 1):
        model.options["time_limit"] = max(0.1, time_limit - (time.perf_counter() - t0))
        out = model.solve()
        if out["x"] is None:
            status = out["status"]
            break
        lb = max(lb, out["bound"] * bound_scale)
        zk = np.round(out["x"][:n])
        fk, point = evaluate(zk)
        if fk < ub:
            ub, best = fk, (zk, point)
        if _close(ub, lb, tol):
            status = "optimal"
            break
        if out["status"] != "Optimal" or time.perf_counter() - t0 > time_limit:
            status = out["status"] if out["status"] != "Optimal" else "time_limit"
            break
        add_cut(point)
    return lb, ub, best, status, it


def solve_mask_oa(qp: BinaryQP, z0: np.ndarray | None = None, time_limit: float = 60.0,
                  tol: float = 1e-7, max_iter: int = 500) -> ExactResult:
    """Outer approximation (Kelley cuts) on the convex quadratic, HiGHS MILP master."""
    t0 = time.perf_counter()
    s = _scale(qp)
    Q, c = qp.Q / s, qp.c / s
    const = qp.const / s
    n = qp.n
    model = HighsModel(time_limit=time_limit)
    z = model.add_cols(n, 0, 1, 0.0, integer=True)
    eta = model.add_cols(1, 0.0 if const >= 0 else -INF, INF, 1.0)[0]   # f >= 0 for real sub-blocks
    for g, p in qp.groups:
        model.add_row(z[g], np.ones(len(g)), p, p)

    def value(zk):
        return float(zk @ Q @ zk + c @ zk + const)

    def add_cut(zk):
        g = 2 * Q @ zk + c
        # eta >= f(zk) + g^T (z - zk)  <=>  eta - g^T z >= f(zk) - g^T zk
        model.add_row(np.concatenate([[eta], z]), np.concatenate([[1.0], -g]), lower=value(zk) - g @ zk)

    start = [np.asarray(z0, float)] if z0 is not None else []
    start.append(qp.lmo(2 * Q @ np.full(n, 0.5) + c))
    best, ub = (None, None), np.inf
    for zk in start:
        add_cut(zk)
        if qp.feasible(zk) and value(zk) < ub:
            best, ub = (zk, zk), value(zk)
    lb, ub, (best_z, _), status, it = _outer_approximation(
        model, n, lambda zk: (value(zk), zk), add_cut, ub, best, 1.0, t0, time_limit, tol, max_iter)
    return ExactResult(status, ub * s, min(lb, ub) * s, best_z, time.perf_counter() - t0, "oa", it)


def solve_mask(qp: BinaryQP, method: str = "milp", **kw) -> ExactResult:
    if method == "milp":
        return solve_mask_milp(qp, **kw)
    if method == "oa":
        return solve_mask_oa(qp, **kw)
    raise ValueError(f"unknown exact method {method!r}: use 'milp' or 'oa'")


# ---------------------------------------------------------------------- refit
def _refit_rows(W: np.ndarray, G: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-row least squares on the kept support: G_SS v_S = (G w)_S."""
    V = np.zeros_like(W)
    for i in range(W.shape[0]):
        S = np.nonzero(keep[i])[0]
        if len(S):
            V[i, S] = np.linalg.lstsq(G[np.ix_(S, S)], (G @ W[i])[S], rcond=None)[0]
    return V


def _rows_error(W, V, G) -> np.ndarray:
    D = W - V
    return ((D @ G) * D).sum(1)


def solve_refit_oa(block: SubBlock, time_limit: float = 60.0, tol: float = 1e-6,
                   max_iter: int = 300) -> ExactResult:
    """Mask + weight refit on a sub-block: outer approximation with rigorous big-M."""
    t0 = time.perf_counter()
    prob = block.problem
    rows = block.rows
    W = prob.W.detach().cpu().double().numpy()[rows]
    G = prob.G.detach().cpu().double().numpy()
    R, d = W.shape
    try:
        L_inv = np.linalg.inv(np.linalg.cholesky(G))
    except np.linalg.LinAlgError:
        raise ValueError("exact refit needs a positive definite G: dampen it first "
                         "(LayerProblem(W, problem.damped_gram(...)))") from None
    Ginv_diag = (L_inv ** 2).sum(0)           # (G^-1)_ee, G = L L^T
    base_keep = block.base_mask.numpy()[rows]
    qp = block.qp
    n = qp.n
    # entry (b, j) -> unit index or -1 (fixed)
    unit_of = -np.ones((R, d), dtype=int)
    row_pos = {int(r): b for b, r in enumerate(rows)}
    for u, entries in enumerate(block.unit_entries):
        for i, j in entries:
            unit_of[row_pos[i], j] = u
    free = (unit_of >= 0) | base_keep                  # entries whose value v may be nonzero
    s = float(max(np.abs(G).max(), 1e-300)) * float(max(np.abs(W).max() ** 2, 1e-300))

    def keep_from_z(zk):
        keep = base_keep.copy()
        m = unit_of >= 0
        keep[m] = zk[unit_of[m]] < 0.5
        return keep

    z_base = block.units_from_mask(block.base_mask)
    V0 = _refit_rows(W, G, keep_from_z(z_base))
    ub_rows = _rows_error(W, V0, G)
    ub, best_z, best_V = float(ub_rows.sum()), z_base, V0
    M = np.abs(W) + np.sqrt(max(ub, 0.0) * Ginv_diag)[None, :] + 1e-9

    model = HighsModel(time_limit=time_limit)
    z = model.add_cols(n, 0, 1, 0.0, integer=True)
    v_idx = -np.ones((R, d), dtype=int)
    fb, fj = np.nonzero(free)
    v_cols = model.add_cols(len(fb), -M[fb, fj], M[fb, fj], 0.0)
    v_idx[fb, fj] = v_cols
    eta = model.add_cols(R, 0.0, INF, 1.0)
    for g, p in qp.groups:
        model.add_row(z[g], np.ones(len(g)), p, p)
    for b, j in zip(fb, fj):
        u = unit_of[b, j]
        if u >= 0:   # |v| <= M (1 - z_u)
            model.add_row([v_idx[b, j], z[u]], [1.0, M[b, j]], upper=M[b, j])
            model.add_row([v_idx[b, j], z[u]], [-1.0, M[b, j]], upper=M[b, j])

    def add_cuts(V):
        # eta_b >= f_b(v_k) + grad^T (v - v_k), grad = -2 G (w - v_k); scaled by s
        for b in range(R):
            cols = v_idx[b][free[b]]
            grad = (-2 * G @ (W[b] - V[b]))[free[b]] / s
            fk = float((W[b] - V[b]) @ G @ (W[b] - V[b])) / s
            model.add_row(np.concatenate([[eta[b]], cols]), np.concatenate([[1.0], -grad]),
                          lower=fk - grad @ V[b][free[b]])

    add_cuts(V0)
    add_cuts(W * free)      # cut at v = w: the unconstrained minimiser

    def evaluate(zk):
        Vk = _refit_rows(W, G, keep_from_z(zk))
        return float(_rows_error(W, Vk, G).sum()), Vk

    lb, ub, (best_z, best_V), status, it = _outer_approximation(
        model, n, evaluate, add_cuts, ub, (best_z, best_V), s, t0, time_limit, tol, max_iter)
    return ExactResult(status, ub, min(lb, ub), best_z, time.perf_counter() - t0, "refit-oa", it, best_V)
