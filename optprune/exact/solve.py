"""Exact solution of sub-block problems with HiGHS (MILP and convex QP: HiGHS has no MIQP).

Every solver here takes a `SubBlock`, solves one statement of `formulations`, and returns
the one `Result` (mask = the sub-block's unit keep vector, True = kept; `objective` the best value
found; `lower_bound` what was proven; `status` in the one vocabulary).  The registry
`EXACT_METHODS` names them for the comparator and the CLI:

* ``milp``      mask only, the exact MILP linearisation (McCormick + RLT), one HiGHS MILP.
* ``oa``        mask only, outer approximation: Kelley cuts on the convex quadratic; the master MILP
                is a lower bound, f at its solution an upper bound, and the loop stops when they meet
                (a repeated z_k closes the gap, so it is finite).
* ``oa-qcr``    mask only, outer approximation of the quadratic convex reformulation (`convex_reformulation`:
                the diagonal of the Shor SDP moved onto the linear term), whose cuts and relaxation are far
                tighter on the ill-conditioned Grams of LLM layers.
* ``refit-oa``  mask + refit, outer approximation with rigorous big-M; cuts at the fixed-support
                least-squares optima (Duran-Grossmann OA), so the loop is finite.
* ``bnb-qcr``   mask only, no HiGHS: best-first branch and bound whose nodes are bounded by the same convex
                reformulation, relaxed in batches (`window_bnb.qcr_branch_and_bound`; 64 decisions in
                about 10 s on SmolLM2 rows).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from formulations import backends
from formulations.mask import BinaryQP, convex_reformulation, diagonal_perturbation, mask_milp, mask_oa_master, milp_point, oa_cut
from formulations.refit import refit_cuts, refit_oa_master
from ..result import Result
from .subblock import SubBlock
from .window_bnb import Groups, qcr_branch_and_bound


def _close(ub: float, lb: float, tol: float) -> bool:
    return ub - lb <= tol * max(1.0, abs(ub))


def _result(method, keep, objective, bound, status, t0, iterations=0, weight=None) -> Result:
    """Every objective here is a squared norm (G is PSD), so 0 is a proven bound before HiGHS has one."""
    bound = max(bound, 0.0)
    bound = min(bound, objective) if np.isfinite(objective) else bound
    return Result(keep, weight, method, float(objective), lower_bound=float(bound), status=status,
                  seconds=time.perf_counter() - t0, iterations=int(iterations))


def solve_qp_milp(qp: BinaryQP, start_z: np.ndarray | None = None, time_limit: float = 60.0,
                  tol: float = 1e-7) -> Result:
    """The MILP linearisation of a BinaryQP (start_z: a feasible z, 1 = pruned, handed to HiGHS)."""
    t0 = time.perf_counter()
    s = qp.scale()
    scaled = qp.scaled(s)
    start = milp_point(scaled, start_z) if start_z is not None and qp.feasible(start_z) else None
    out = backends.solve_highs(mask_milp(scaled), time_limit, start)
    if out.x is None and start is None:
        return _result("milp", None, np.inf, out.bound * s, out.status, t0, out.nodes)
    z = np.round(out.x[:qp.n]) if out.x is not None else np.asarray(start_z, float)
    ub = qp.value(z)
    if start is not None and qp.value(start_z) < ub:      # HiGHS stopped before taking the start
        z, ub = np.asarray(start_z, float), qp.value(start_z)
    status = "optimal" if _close(ub, out.bound * s, tol) else out.status
    return _result("milp", z < 0.5, ub, out.bound * s, status, t0, out.nodes)


def outer_approximation(master, evaluate: Callable, cuts: Callable, ub: float, best, bound_scale: float,
                        time_limit: float, tol: float, max_iter: int):
    """The OA loop of both OA solvers.  The master's optimum (times bound_scale) is a lower bound;
    evaluate(z_k) -> (f_k, point) gives an upper bound and where the next cuts (`cuts(point)` ->
    rows, lower sides) are taken.  Returns (lb, ub, best, status, iterations)."""
    t0 = time.perf_counter()
    lb, status, it = -np.inf, "iteration_limit", 0
    n = master.blocks["z"].stop
    for it in range(1, max_iter + 1):
        out = backends.solve_highs(master, max(0.1, time_limit - (time.perf_counter() - t0)))
        if out.x is None:
            status = out.status
            break
        lb = max(lb, out.bound * bound_scale)
        zk = np.round(out.x[:n])
        fk, point = evaluate(zk)
        if fk < ub:
            ub, best = fk, (zk, point)
        if _close(ub, lb, tol):
            status = "optimal"
            break
        if out.status != "optimal" or time.perf_counter() - t0 > time_limit:
            status = out.status if out.status != "optimal" else "time_limit"
            break
        rows, lower = cuts(point)
        master = master.with_rows(np.atleast_2d(rows), lower, np.inf)
    return lb, ub, best, status, it


def solve_qp_oa(qp: BinaryQP, start_z: np.ndarray | None = None, time_limit: float = 60.0,
                tol: float = 1e-7, max_iter: int = 500) -> Result:
    """Outer approximation (Kelley cuts) of a BinaryQP, HiGHS MILP master."""
    t0 = time.perf_counter()
    s = qp.scale()
    scaled = qp.scaled(s)
    master = mask_oa_master(scaled)
    starts = ([np.asarray(start_z, float)] if start_z is not None else []) + \
        [scaled.lmo(scaled.gradient(np.full(qp.n, 0.5)))]
    best, ub = (None, None), np.inf
    for zk in starts:
        row, lower = oa_cut(scaled, zk)
        master = master.with_rows(row[None], lower, np.inf)
        if qp.feasible(zk) and scaled.value(zk) < ub:
            best, ub = (zk, zk), scaled.value(zk)

    def cuts(zk):
        return oa_cut(scaled, zk)

    lb, ub, (z, _), status, it = outer_approximation(
        master, lambda zk: (scaled.value(zk), zk), cuts, ub, best, 1.0, time_limit, tol, max_iter)
    keep = None if z is None else np.asarray(z) < 0.5
    return _result("oa", keep, ub * s, lb * s, status, t0, it)


def solve_qp_oa_qcr(qp: BinaryQP, start_z: np.ndarray | None = None, time_limit: float = 60.0,
                    tol: float = 1e-7, max_iter: int = 500) -> Result:
    """Outer approximation with the cuts of two quadratic convex reformulations (the Shor SDP's diagonal,
    whose relaxation is tight, and the flattest one, whose cuts reach far): both equal the QP on every
    binary z and are convex, so every cut is valid for it."""
    t0 = time.perf_counter()
    s = qp.scale()
    scaled = qp.scaled(s)
    forms = [convex_reformulation(scaled, diagonal_perturbation(scaled, kind)) for kind in ("shor", "max")]
    master = mask_oa_master(scaled)

    def cuts(zk):
        pairs = [oa_cut(f, zk) for f in forms]
        return np.stack([r for r, _ in pairs]), np.array([lo for _, lo in pairs])

    starts = ([np.asarray(start_z, float)] if start_z is not None and qp.feasible(start_z) else []) + \
        [scaled.lmo(scaled.gradient(np.full(qp.n, 0.5)))]
    best, ub = (None, None), np.inf
    for zk in starts:
        rows, lower = cuts(zk)
        master = master.with_rows(rows, lower, np.inf)
        if qp.feasible(zk) and scaled.value(zk) < ub:
            best, ub = (zk, zk), scaled.value(zk)
    left = max(0.1, time_limit - (time.perf_counter() - t0))
    lb, ub, (z, _), status, it = outer_approximation(
        master, lambda zk: (scaled.value(zk), zk), cuts, ub, best, 1.0, left, tol, max_iter)
    keep = None if z is None else np.asarray(z) < 0.5
    return _result("oa-qcr", keep, ub * s, lb * s, status, t0, it)


def solve_block_refit_oa(block: SubBlock, start: np.ndarray | None = None, time_limit: float = 60.0,
                         tol: float = 1e-6, max_iter: int = 300) -> Result:
    """Mask + weight refit on a sub-block: outer approximation with rigorous big-M.
    `start` (unit keep vector) defaults to the base mask; weight = the refit rows (R x d)."""
    t0 = time.perf_counter()
    start = block.keep_units(block.base_mask) if start is None else np.asarray(start, bool)

    def evaluate(z):
        return block.refit_value(np.asarray(z) < 0.5)

    W, G = block.problem.float64()
    W = W[block.rows]
    z0 = (~start).astype(float)
    ub, V0 = evaluate(z0)
    data = block.refit_data(ub)
    scale = float(max(np.abs(G).max(), 1e-300)) * float(max(np.abs(W).max() ** 2, 1e-300))
    master = refit_oa_master(data)
    W_star = W if data.W_star is None else data.W_star
    for V in (V0, W_star * data.free):     # cuts at the start's refit and at the unconstrained minimiser
        rows, lower = refit_cuts(data, master, V, scale)
        master = master.with_rows(rows, lower, np.inf)
    lb, ub, (z, V), status, it = outer_approximation(
        master, evaluate, lambda V: refit_cuts(data, master, V, scale), ub, (z0, V0), scale,
        time_limit, tol, max_iter)
    return _result("refit-oa", np.asarray(z) < 0.5, ub, lb, status, t0, it, weight=V)


def solve_qp_bnb_qcr(qp: BinaryQP, start_z: np.ndarray | None = None, time_limit: float = 60.0) -> Result:
    """A BinaryQP by `qcr_branch_and_bound` on z (1 = pruned), its groups made contiguous (every decision in
    one group; z's group sums are the fixed counts), on the data scaled to O(1)."""
    t0 = time.perf_counter()
    order = np.concatenate([np.asarray(g, int) for g, _ in qp.groups])
    if len(order) != qp.n or len(np.unique(order)) != qp.n:
        raise ValueError("bnb-qcr needs every decision in exactly one cardinality group")
    groups = Groups(np.array([len(g) for g, _ in qp.groups]), np.array([float(p) for _, p in qp.groups]))
    start = start_z if start_z is not None and qp.feasible(start_z) else qp.lmo(np.zeros(qp.n))
    s = qp.scale()
    Q = 0.5 * (qp.Q + qp.Q.T)[np.ix_(order, order)] / s
    out = qcr_branch_and_bound(Q, qp.c[order] / s, groups, np.asarray(start, float)[order], qp.const / s,
                               time_limit=time_limit)
    z = np.empty(qp.n)
    z[order] = out.keep
    ub = qp.value(z)
    status = "optimal" if out.status == "optimal" else "time_limit"
    return _result("bnb-qcr", z < 0.5, ub, out.lower_bound * s, status, t0, out.nodes)


@dataclass(frozen=True)
class ExactMethod:
    name: str
    problem: str             # "mask" (W_hat = W * M) or "refit" (kept weights re-solved)
    statement: str           # the formulation it solves
    solve: Callable[..., Result]


def _mask_method(qp_solver):
    def solve(block: SubBlock, start=None, time_limit: float = 60.0, **kw) -> Result:
        start_z = None if start is None else (~np.asarray(start, bool)).astype(float)
        return qp_solver(block.qp, start_z, time_limit=time_limit, **kw)
    return solve


EXACT_METHODS: dict[str, ExactMethod] = {m.name: m for m in (
    ExactMethod("milp", "mask", "mask_milp (McCormick + RLT)", _mask_method(solve_qp_milp)),
    ExactMethod("oa", "mask", "mask_oa_master + Kelley cuts", _mask_method(solve_qp_oa)),
    ExactMethod("oa-qcr", "mask", "mask_oa_master + Kelley cuts on the SDP convex reformulation",
                _mask_method(solve_qp_oa_qcr)),
    ExactMethod("refit-oa", "refit", "refit_oa_master + Duran-Grossmann cuts", solve_block_refit_oa),
    ExactMethod("bnb-qcr", "mask", "branch and bound on batched QCR relaxations (no HiGHS)",
                _mask_method(solve_qp_bnb_qcr)),
)}


def certify_block(block: SubBlock, method: str = "milp", start: np.ndarray | None = None,
                  time_limit: float = 60.0, **kw) -> Result:
    """Solve a sub-block with a registered exact method (start: a unit keep vector)."""
    if method not in EXACT_METHODS:
        raise ValueError(f"unknown exact method {method!r}; choose from {sorted(EXACT_METHODS)}")
    return EXACT_METHODS[method].solve(block, start, time_limit=time_limit, **kw)


def block_value(block: SubBlock, keep_units: np.ndarray, method: str = "milp") -> float:
    """A mask's value in the objective the exact method certifies (mask only, or with refit)."""
    if EXACT_METHODS[method].problem == "mask":
        return block.value(keep_units)
    return block.refit_value(keep_units)[0]
