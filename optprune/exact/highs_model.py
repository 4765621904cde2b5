"""A thin row-wise builder for HiGHS models (MILP, and convex QP with a Hessian)."""
from __future__ import annotations

import numpy as np
import highspy

INF = highspy.kHighsInf


class HighsModel:
    """Collect columns and rows, then solve with HiGHS.  min c^T x (+ 1/2 x^T H x)."""

    def __init__(self, time_limit: float = 60.0, mip_rel_gap: float = 1e-9, threads: int = 1):
        self.lower, self.upper, self.cost, self.integer = [], [], [], []
        self.rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        self.options = dict(output_flag=False, time_limit=float(time_limit),
                            mip_rel_gap=mip_rel_gap, mip_abs_gap=0.0, threads=threads,
                            mip_feasibility_tolerance=1e-9, primal_feasibility_tolerance=1e-9)
        self.hessian = None

    def add_cols(self, n: int, lower=0.0, upper=1.0, cost=0.0, integer=False) -> np.ndarray:
        start = len(self.lower)
        self.lower += list(np.broadcast_to(lower, n).astype(float))
        self.upper += list(np.broadcast_to(upper, n).astype(float))
        self.cost += list(np.broadcast_to(cost, n).astype(float))
        self.integer += [integer] * n
        return np.arange(start, start + n)

    def add_row(self, idx, val, lower=-INF, upper=INF) -> None:
        self.rows.append((np.asarray(idx, dtype=np.int32), np.asarray(val, dtype=float), lower, upper))

    def set_hessian(self, H: np.ndarray) -> None:
        """Dense symmetric H for the objective term 1/2 x^T H x (lower triangle is passed)."""
        self.hessian = np.asarray(H, dtype=float)

    def _lp(self) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.lower)
        lp.num_row_ = len(self.rows)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_ = np.array(self.lower)
        lp.col_upper_ = np.array(self.upper)
        lp.row_lower_ = np.array([r[2] for r in self.rows])
        lp.row_upper_ = np.array([r[3] for r in self.rows])
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.num_col_ = lp.num_col_
        lp.a_matrix_.num_row_ = lp.num_row_
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum([len(r[0]) for r in self.rows])]).astype(np.int32)
        lp.a_matrix_.index_ = np.concatenate([r[0] for r in self.rows]) if self.rows else np.array([], np.int32)
        lp.a_matrix_.value_ = np.concatenate([r[1] for r in self.rows]) if self.rows else np.array([])
        if any(self.integer):
            lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                               for i in self.integer]
        return lp

    def solve(self, start: np.ndarray | None = None) -> dict:
        """Solve; `start` is a feasible point handed to HiGHS as the incumbent (MIP start)."""
        h = highspy.Highs()
        for k, v in self.options.items():
            h.setOptionValue(k, v)
        if self.hessian is not None:
            model = highspy.HighsModel()
            model.lp_ = self._lp()
            H = np.tril(self.hessian)
            hess = highspy.HighsHessian()
            hess.dim_ = H.shape[0]
            hess.format_ = highspy.HessianFormat.kTriangular
            idx, starts, vals = [], [0], []
            for j in range(H.shape[0]):
                nz = np.nonzero(H[j:, j])[0] + j
                idx += list(nz)
                vals += list(H[nz, j])
                starts.append(len(idx))
            hess.start_, hess.index_, hess.value_ = np.array(starts, np.int32), np.array(idx, np.int32), np.array(vals)
            model.hessian_ = hess
            h.passModel(model)
        else:
            h.passModel(self._lp())
        if start is not None:
            sol = highspy.HighsSolution()
            sol.col_value = list(np.asarray(start, dtype=float))
            sol.value_valid = True
            h.setSolution(sol)
        h.run()
        info = h.getInfo()
        status = h.modelStatusToString(h.getModelStatus())
        sol = np.array(h.getSolution().col_value) if info.primal_solution_status else None
        mip = any(self.integer)
        return dict(status=status, x=sol, objective=info.objective_function_value,
                    bound=info.mip_dual_bound if mip else info.objective_function_value,
                    nodes=info.mip_node_count if mip else 0)
