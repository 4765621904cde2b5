"""Backends: each one emits a `Statement` and solves it, nothing more.

* HiGHS (highspy): LP, MILP and convex QP.  It has no MIQP: such a statement is refused with the
  reason and the way round it (the MILP linearisation or outer approximation).
* cvxpy: any statement (MIQP needs a mixed-integer QP solver; HiGHS through cvxpy takes MILP).
* Pyomo: any statement; `write_statement` writes .lp / .mps for any MIP solver.
* `enumerate_integers`: exact for tiny MIQPs by fixing every feasible integer point and solving
  the remaining convex QP with HiGHS (tests tie the MIQP statements to the solvers with it).

HiGHS keeps one process-wide thread scheduler: options that size it (`threads`) are never set
here, so a model is never refused because cvxpy's or Pyomo's HiGHS started the scheduler first.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from itertools import product

import highspy
import numpy as np

from .statement import ExactSolveError, Statement

HIGHS_STATUS = {"Optimal": "optimal", "Time limit reached": "time_limit",
                "Iteration limit reached": "iteration_limit", "Infeasible": "infeasible",
                "Solution limit reached": "iteration_limit", "Interrupted by user": "time_limit"}


@dataclass
class HighsOutcome:
    status: str                 # the one status vocabulary (optprune.result.STATUSES)
    x: np.ndarray | None        # best point found (None: none)
    objective: float            # its value, const included (inf without a point)
    bound: float                # proven lower bound, const included (-inf when none)
    nodes: int


def _highs_lp(st: Statement) -> highspy.HighsLp:
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = st.n, st.A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = st.cost, st.lower, st.upper
    lp.row_lower_, lp.row_upper_ = st.row_lower, st.row_upper
    lp.offset_ = st.const
    A = st.A.tocsr()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = st.n, A.shape[0]
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(float)
    if st.integer.any():
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in st.integer]
    return lp


def _highs_hessian(Q: np.ndarray) -> highspy.HighsHessian:
    """HiGHS minimises 1/2 x^T H x: H = 2Q, lower triangle, column-wise."""
    H = np.tril(2.0 * Q)
    hess = highspy.HighsHessian()
    hess.dim_, hess.format_ = H.shape[0], highspy.HessianFormat.kTriangular
    idx, starts, vals = [], [0], []
    for j in range(H.shape[0]):
        nz = np.nonzero(H[j:, j])[0] + j
        idx += list(nz)
        vals += list(H[nz, j])
        starts.append(len(idx))
    hess.start_, hess.index_, hess.value_ = np.array(starts, np.int32), np.array(idx, np.int32), np.array(vals)
    return hess


_BANNER_SHOWN = False


def quiet_highs() -> "highspy.Highs":
    """A Highs instance; the first one is built with file descriptor 1 silenced, since HiGHS prints
    its banner on stdout then (it would land in a Markdown table or a JSON on stdout)."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return highspy.Highs()
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _BANNER_SHOWN = True
    return h


def solve_highs(st: Statement, time_limit: float = 60.0, start: np.ndarray | None = None,
                mip_rel_gap: float = 1e-9) -> HighsOutcome:
    """Solve an LP, MILP or convex QP statement with HiGHS (`start`: a feasible incumbent).  Every answer is
    checked: the objective HiGHS reports must be the statement's own value of the point it returns.  HiGHS
    1.16 can carry a start wrongly through presolve and call it optimal at a value it does not have (seen on
    allocation knapsacks with tied options); such an answer is solved again with presolve off, and any other
    disagreement is an error, never a silent result."""
    out = _run_highs(st, time_limit, start, mip_rel_gap, presolve=True)
    if _reports_its_point(st, out):
        return out
    if start is not None:
        out = _run_highs(st, time_limit, start, mip_rel_gap, presolve=False)
        if _reports_its_point(st, out):
            return out
    raise ExactSolveError(f"{st.name}: HiGHS reported objective {out.objective:.10g} for a point whose value is "
                          f"{st.value(out.x):.10g}")


def _reports_its_point(st: Statement, out: HighsOutcome) -> bool:
    if out.x is None:
        return True
    value = st.value(out.x)
    return abs(value - out.objective) <= 1e-7 * max(1.0, abs(value), abs(out.objective))


def _run_highs(st: Statement, time_limit: float, start: np.ndarray | None, mip_rel_gap: float,
               presolve: bool) -> HighsOutcome:
    if st.kind == "MIQP":
        raise ExactSolveError(f"{st.name}: HiGHS has no MIQP; solve its MILP linearisation or by outer approximation")
    h = quiet_highs()
    for k, v in dict(output_flag=False, time_limit=float(time_limit), mip_rel_gap=mip_rel_gap, mip_abs_gap=0.0,
                     mip_feasibility_tolerance=1e-9, primal_feasibility_tolerance=1e-9,
                     presolve="on" if presolve else "off").items():
        h.setOptionValue(k, v)
    if st.Q is not None:
        model = highspy.HighsModel()
        model.lp_, model.hessian_ = _highs_lp(st), _highs_hessian(st.Q)
        h.passModel(model)
    else:
        h.passModel(_highs_lp(st))
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = list(np.asarray(start, dtype=float))
        sol.value_valid = True
        h.setSolution(sol)
    solve_interruptibly(h)
    raw = h.modelStatusToString(h.getModelStatus())
    if raw not in HIGHS_STATUS:
        raise ExactSolveError(f"{st.name}: HiGHS ended with status {raw!r}")
    info = h.getInfo()
    x = np.array(h.getSolution().col_value) if info.primal_solution_status else None
    mip = bool(st.integer.any())
    objective = info.objective_function_value if x is not None else np.inf
    bound = info.mip_dual_bound if mip else (objective if raw == "Optimal" else -np.inf)
    return HighsOutcome(HIGHS_STATUS[raw], x, objective, bound, info.mip_node_count if mip else 0)


def solve_interruptibly(h) -> None:
    """h's solve in HiGHS's own thread, so that Ctrl-C (and SIGTERM, which the CLI turns into Ctrl-C) is raised
    here at once instead of after the time limit inside a C++ loop that never returns to Python.  The solver
    thread is started with SIGINT and SIGTERM blocked, so that it and the worker threads HiGHS starts from it
    never take a signal meant for the process.  On an interrupt the solver is asked to stop (it checks between
    simplex and branch-and-bound steps, seconds apart on a large root LP) and given a second; the solve is then
    kept in INTERRUPTED: a C++ thread still running must not be destroyed, or the C++ runtime aborts the process
    (exit -6 instead of 130), and the runtime's teardown after a cancelled solve is not to be trusted either, so
    the CLI ends the process at once (`exit_now_if_solving`)."""
    h.HandleUserInterrupt = True
    try:
        with _signals_blocked():
            h.startSolve()
        while not h.wait(0.1)[0]:
            pass
    except KeyboardInterrupt:
        INTERRUPTED.append(h)
        h.cancelSolve()
        h.wait(1.0)
        raise


@contextlib.contextmanager
def _signals_blocked():
    """SIGINT and SIGTERM held back from the calling thread (and from the threads it starts) inside the block;
    one that arrives meanwhile is delivered when the block ends.  A no-op off the main thread or off POSIX."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


INTERRUPTED: list = []      # HiGHS solves cancelled by an interrupt (some may still be running)


def exit_now_if_solving(code: int) -> None:
    """End the process with `code` without finalising it (no C++ destructors) when a HiGHS solve was
    interrupted: the only exit that neither waits for a solve still running nor aborts in its teardown."""
    if INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def to_cvxpy(st: Statement):
    """(cvxpy.Problem, variable x) stating the same problem."""
    import cvxpy as cp

    integer = np.nonzero(st.integer)[0]
    x = cp.Variable(st.n)
    cons = []
    if len(integer):              # the integer entries of x equal an integer variable
        cons.append(x[integer] == cp.Variable(len(integer), integer=True))
    obj = st.cost @ x + st.const
    if st.Q is not None:
        obj = obj + cp.quad_form(x, cp.psd_wrap(st.Q))
    for bounds, side in ((st.lower, 1), (st.upper, -1)):
        finite = np.isfinite(bounds)
        if finite.any():
            cons.append(side * x[finite] >= side * bounds[finite])
    for bounds, side in ((st.row_lower, 1), (st.row_upper, -1)):
        finite = np.isfinite(bounds)
        if finite.any():
            cons.append(side * (st.A[finite] @ x) >= side * bounds[finite])
    return cp.Problem(cp.Minimize(obj), cons), x


def to_pyomo(st: Statement):
    """A Pyomo ConcreteModel with variables x[k] stating the same problem (Pyomo: the optional extra)."""
    try:
        import pyomo.environ as pyo
    except ImportError:
        raise ImportError("Pyomo is optional: pip install 'optprune[pyomo]' to emit statements through it") from None

    mdl = pyo.ConcreteModel(name=st.name)
    mdl.K = pyo.RangeSet(0, st.n - 1)

    def domain(m, k):
        return pyo.Integers if st.integer[k] else pyo.Reals

    def bounds(m, k):
        return (st.lower[k] if np.isfinite(st.lower[k]) else None, st.upper[k] if np.isfinite(st.upper[k]) else None)

    mdl.x = pyo.Var(mdl.K, domain=domain, bounds=bounds)
    expr = sum(float(st.cost[k]) * mdl.x[k] for k in range(st.n) if st.cost[k]) + st.const
    if st.Q is not None:
        qi, qj = np.nonzero(np.triu(st.Q))
        expr += sum((1.0 if i == j else 2.0) * float(st.Q[i, j]) * mdl.x[i] * mdl.x[j] for i, j in zip(qi, qj))
    mdl.obj = pyo.Objective(expr=expr)
    mdl.rows = pyo.ConstraintList()
    A = st.A.tocsr()
    for r in range(A.shape[0]):
        lo, hi = st.row_lower[r], st.row_upper[r]
        body = sum(float(v) * mdl.x[int(k)] for k, v in zip(A.indices[A.indptr[r]:A.indptr[r + 1]],
                                                           A.data[A.indptr[r]:A.indptr[r + 1]]))
        mdl.rows.add((lo if np.isfinite(lo) else None, body, hi if np.isfinite(hi) else None))
    return mdl


def write_statement(st: Statement, path: str) -> str:
    """Write the statement through Pyomo as .lp or .mps (by suffix), for any MIP solver."""
    fmt = "mps" if path.endswith(".mps") else "cpxlp"
    to_pyomo(st).write(path, format=fmt, io_options={"symbolic_solver_labels": True})
    return path


def enumerate_integers(st: Statement, time_limit: float = 60.0) -> tuple[float, np.ndarray]:
    """Exact optimum of a tiny mixed-integer statement: every integer point in the bounds is fixed in
    turn and the remaining convex QP/LP solved by HiGHS (tests only: a few thousand points at most)."""
    idx = np.nonzero(st.integer)[0]
    ranges = [range(int(np.ceil(st.lower[k])), int(np.floor(st.upper[k])) + 1) for k in idx]
    best, best_x = np.inf, None
    for point in product(*ranges):
        sub = st.fixed(idx, np.array(point, float))
        if not _integer_rows_can_hold(sub, idx):
            continue
        out = solve_highs(sub, time_limit)
        if out.status == "optimal" and out.objective < best:
            best, best_x = out.objective, out.x
    return best, best_x


def _integer_rows_can_hold(st: Statement, idx: np.ndarray) -> bool:
    """Skip integer points that already break a row over the integer variables alone."""
    only_int = np.asarray((abs(st.A) @ (~np.isin(np.arange(st.n), idx)).astype(float)) == 0).ravel()
    if not only_int.any():
        return True
    ax = st.A[only_int] @ st.lower
    return bool(np.all(ax >= st.row_lower[only_int] - 1e-9) and np.all(ax <= st.row_upper[only_int] + 1e-9))
