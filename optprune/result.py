"""The one result type of every solver, heuristic or exact.  Convention: mask True = kept."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from formulations.statement import ExactSolveError  # noqa: F401  (the exact backends raise it; re-exported)

# One status vocabulary for every solver:
#   heuristic        a torch method's answer: no optimality claim
#   optimal          objective and proven lower bound agree within the solver's tolerance
#   time_limit       stopped by the time limit: objective is the incumbent, lower_bound what was proven
#   iteration_limit  stopped by an iteration cap, likewise
#   infeasible       no mask satisfies the constraints
STATUSES = ("heuristic", "optimal", "time_limit", "iteration_limit", "infeasible")


@dataclass
class Result:
    mask: Any                          # keep mask (True = kept): a layer's (torch) or a sub-block's units (numpy)
    weight: Any                        # W_hat, zero outside the mask (None when only the mask is solved)
    method: str
    objective: float = float("nan")    # value of (mask, weight): an upper bound on the optimum
    history: list[float] = field(default_factory=list)   # objective per iteration
    lower_bound: float | None = None   # proven lower bound on the optimum (None: nothing proven)
    seconds: float = 0.0
    status: str = "heuristic"
    iterations: int = 0

    @property
    def certified(self) -> bool:
        return self.status == "optimal"

    @property
    def gap(self) -> float:
        """objective - lower_bound (inf when nothing is proven)."""
        if self.lower_bound is None or not math.isfinite(self.objective):
            return math.inf
        return max(0.0, self.objective - self.lower_bound)


PruneResult = Result     # the name the heuristic solvers have always used
