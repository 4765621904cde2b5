"""Convex relaxation lower bound of a sub-block (HiGHS convex QP + a certificate).

The relaxation (`formulations.mask.mask_relaxation`) drops the integrality of z.  Any point x,
feasible or not, certifies a lower bound on it, and so on the integer optimum, by convexity
(`relaxed_bound_certificate`, the Frank-Wolfe dual bound), so the bound is rigorous whatever
accuracy the QP solver reached.  The status says whether HiGHS solved the QP: a bound from a
point HiGHS did not finish is still valid, but is reported with HiGHS's status, never as 'optimal'.
"""
from __future__ import annotations

import time

import numpy as np

from formulations import backends
from formulations.mask import BinaryQP, mask_relaxation, relaxed_bound_certificate
from ..result import Result


def relaxation_bound(qp: BinaryQP, time_limit: float = 60.0) -> Result:
    """Result with lower_bound = the certified relaxation bound, objective = the relaxed optimum,
    mask = the relaxed keep values (1 - z) and status HiGHS's (one vocabulary)."""
    t0 = time.perf_counter()
    out = backends.solve_highs(mask_relaxation(qp), time_limit)
    x = out.x if out.x is not None else qp.lmo(qp.c)
    bound = relaxed_bound_certificate(qp, x)
    return Result(1.0 - np.clip(x, 0, 1), None, "relaxation", float(qp.value(np.clip(x, 0, 1))),
                  lower_bound=float(bound), status=out.status, seconds=time.perf_counter() - t0)
