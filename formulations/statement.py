"""One statement of an optimisation problem as array data; backends only emit and solve it.

    min  x^T Q x + c^T x + const
    s.t. row_lower <= A x <= row_upper,   lower <= x <= upper,   x_k integer for k in `integer`

Q is symmetric (None for a linear objective).  Named variable blocks (`blocks`: z, y, v, eta, ...)
say what each variable means.  A statement with integer variables and a Q is an MIQP: HiGHS has
none, so it is solved through its exact MILP linearisation or by outer approximation (both are
statements of their own), or, on tiny instances, by enumerating the integers (`enumerate_integers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp



class ExactSolveError(RuntimeError):
    """An exact solver ended without a usable status (a solver error, not a limit)."""


@dataclass
class Statement:
    name: str
    cost: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray
    A: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    Q: np.ndarray | None = None
    const: float = 0.0
    blocks: dict[str, slice] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.cost)

    @property
    def kind(self) -> str:
        mixed = bool(self.integer.any())
        if self.Q is None:
            return "MILP" if mixed else "LP"
        return "MIQP" if mixed else "QP"

    def value(self, x: np.ndarray) -> float:
        x = np.asarray(x, float)
        quad = float(x @ self.Q @ x) if self.Q is not None else 0.0
        return quad + float(self.cost @ x) + self.const

    def feasible(self, x: np.ndarray, tol: float = 1e-7) -> bool:
        x = np.asarray(x, float)
        ax = self.A @ x
        ints = x[self.integer]
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol)
                    and np.all(ax >= self.row_lower - tol) and np.all(ax <= self.row_upper + tol)
                    and np.all(np.abs(ints - np.round(ints)) <= tol))

    def with_rows(self, A: sp.spmatrix, lower, upper) -> "Statement":
        """The statement with rows appended (outer-approximation cuts)."""
        return replace(self, A=sp.vstack([self.A, sp.csr_matrix(A)], format="csr"),
                       row_lower=np.concatenate([self.row_lower, np.broadcast_to(lower, A.shape[0])]),
                       row_upper=np.concatenate([self.row_upper, np.broadcast_to(upper, A.shape[0])]))

    def relaxed(self) -> "Statement":
        """Integrality dropped: a lower bound (a convex QP/LP when Q is PSD)."""
        return replace(self, name=self.name + " (relaxation)", integer=np.zeros(self.n, bool))

    def fixed(self, idx: np.ndarray, values: np.ndarray) -> "Statement":
        lower, upper = self.lower.copy(), self.upper.copy()
        lower[idx] = upper[idx] = values
        return replace(self, lower=lower, upper=upper, integer=np.zeros(self.n, bool))


class StatementBuilder:
    """Collects variable blocks and sparse rows, then freezes them into a Statement."""

    def __init__(self, name: str):
        self.name = name
        self.cost, self.lower, self.upper, self.integer = [], [], [], []
        self.blocks: dict[str, slice] = {}
        self.rows, self.cols, self.vals, self.row_lower, self.row_upper = [], [], [], [], []

    def add_vars(self, block: str, n: int, lower=0.0, upper=1.0, cost=0.0, integer=False) -> np.ndarray:
        start = len(self.cost)
        self.cost += list(np.broadcast_to(np.asarray(cost, float), n))
        self.lower += list(np.broadcast_to(np.asarray(lower, float), n))
        self.upper += list(np.broadcast_to(np.asarray(upper, float), n))
        self.integer += [bool(integer)] * n
        self.blocks[block] = slice(start, start + n)
        return np.arange(start, start + n)

    def add_row(self, idx, val, lower=-np.inf, upper=np.inf) -> None:
        r = len(self.row_lower)
        idx = np.asarray(idx, int)
        self.rows += [r] * len(idx)
        self.cols += list(idx)
        self.vals += list(np.broadcast_to(np.asarray(val, float), len(idx)))
        self.row_lower.append(float(lower))
        self.row_upper.append(float(upper))

    def build(self, Q: np.ndarray | None = None, const: float = 0.0) -> Statement:
        n = len(self.cost)
        A = sp.csr_matrix((self.vals, (self.rows, self.cols)), shape=(len(self.row_lower), n))
        return Statement(self.name, np.array(self.cost), np.array(self.lower), np.array(self.upper),
                         np.array(self.integer, bool), A, np.array(self.row_lower), np.array(self.row_upper),
                         Q, float(const), dict(self.blocks))

