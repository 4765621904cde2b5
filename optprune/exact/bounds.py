"""Every lower bound optprune proves, as one type, and the registry that names the ways to prove one.

A `Bound` is a proven lower bound on a layer's objective summed over `rows` (absolute units): `value` is the
proven number, under that one name everywhere; `per_row` each row's own where the rows are independent;
`problem` what it bounds ('mask': f(W o M); 'refit': the kept weights re-solved, whose optimum is at most the
mask problem's); `scope` the masks it covers (all masks of the pattern, or a neighbourhood).  A bound certifies
a mask of objective f within the factor f / value of the optimum (`Bound.ratio`), and only where it is not
negligible (`certifies`: over 0.1% of f).  `BOUNDS` names each way of proving one:

* ``box``          the convex relaxation over [0, 1] (Frank-Wolfe dual bound; QCR with lam = 0), mask only
* ``qcr``          the quadratic convex reformulation with one SDP diagonal per layer, mask only, every row
* ``perspective``  the perspective relaxation of mask + refit with the same diagonal, rows independent
* ``dnn``          the doubly nonnegative relaxation of each row (ADMM, a dual bound at every check), mask only
* ``subblock``     an exact method (`EXACT_METHODS`) on rows x window with the rest of the mask fixed: a bound
                   on that neighbourhood only (scope), proven by HiGHS or `bnb-qcr`

`prove(name, problem, pattern, mask, rows=...)` computes any of them from a keep mask (True = kept: the warm
start, or the neighbourhood's fixed part); tests/exact/test_bounds.py checks every one against the brute-force
optimum of tiny problems of every pattern it applies to.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

CERTIFIES = 1e-3      # a bound under 0.1% of the objective (a ratio over 1000) proves nothing worth printing
EVERY_MASK = "every mask of the pattern"


def certifies(objective: float, bound: float) -> bool:
    """Whether `bound` proves something about a mask of value `objective` (positive, over 0.1% of it)."""
    return bound == bound and objective == objective and bound > CERTIFIES * abs(objective) and bound > 0


@dataclass
class Bound:
    """A proven lower bound (module doc)."""

    kind: str                            # the BOUNDS name that proved it
    problem: str                         # 'mask' or 'refit'
    value: float                         # the proven lower bound on the objective summed over `rows`
    rows: np.ndarray
    per_row: np.ndarray | None = None    # each row's own bound (rows independent)
    scope: str = EVERY_MASK
    seconds: float = 0.0
    iterations: int = 0

    def ratio(self, objective: float) -> float:
        """objective / value: the mask is within this factor of the optimum; nan where nothing is certified."""
        return objective / self.value if certifies(objective, self.value) else float("nan")


@dataclass(frozen=True)
class BoundMethod:
    name: str
    problem: str                         # 'mask' or 'refit'
    statement: str                       # what is relaxed, in a few words
    compute: Callable[..., Bound]
    needs_independent_rows: bool = False


def _layer_diagonal(problem, max_seconds: float):
    from .row_bounds import shared_diagonal

    W, G = problem.float64()
    return shared_diagonal(G, (W ** 2).mean(0), max_seconds=max_seconds)


def _on_rows(bound: Bound, rows) -> Bound:
    """`bound` restricted to `rows` (its per-row parts summed); a bound without per-row parts covers all rows."""
    if rows is None:
        return bound
    rows = np.asarray(rows, int)
    if bound.per_row is None:
        raise ValueError(f"the {bound.kind} bound of this pattern covers the whole layer, not rows {rows.tolist()}")
    per_row = bound.per_row[np.searchsorted(bound.rows, rows)]
    return Bound(bound.kind, bound.problem, float(per_row.sum()), rows, per_row, bound.scope, bound.seconds,
                 bound.iterations)


def _box(problem, pattern, mask, rows=None, iters: int = 300) -> Bound:
    from .row_bounds import qcr_bound
    return _on_rows(qcr_bound(problem, pattern, None, start=mask, iters=iters), rows)


def _qcr(problem, pattern, mask, rows=None, iters: int = 300, max_seconds: float = 120.0, diagonal=None) -> Bound:
    """`diagonal`: a `shared_diagonal` of the layer's Gram computed by the caller (e.g. once for the layers that
    share an input), else this layer's own."""
    from .row_bounds import qcr_bound
    t0 = time.perf_counter()
    lam = _layer_diagonal(problem, max_seconds) if diagonal is None else diagonal
    bound = _on_rows(qcr_bound(problem, pattern, lam, start=mask, iters=iters), rows)
    bound.seconds = time.perf_counter() - t0
    return bound


def _perspective(problem, pattern, mask, rows=None, iters: int = 30, max_seconds: float = 120.0) -> Bound:
    from .row_bounds import perspective_bound
    t0 = time.perf_counter()
    bound = perspective_bound(problem, pattern, _layer_diagonal(problem, max_seconds), rows=rows, start=mask,
                              iters=iters)
    bound.seconds = time.perf_counter() - t0
    return bound


def _dnn(problem, pattern, mask, rows=None, iters: int = 2000, seconds: float | None = None) -> Bound:
    from .dnn import dnn_row_bound
    t0 = time.perf_counter()
    rows = np.arange(problem.shape[0]) if rows is None else np.asarray(rows, int)
    start = None if mask is None else mask.cpu().numpy()
    per_row = np.array([dnn_row_bound(problem, pattern, int(r), iters, seconds,
                                      None if start is None else start[r]).bound for r in rows])
    return Bound("dnn", "mask", float(per_row.sum()), rows, per_row, EVERY_MASK, time.perf_counter() - t0, iters)


def _subblock(problem, pattern, mask, rows=None, window=None, exact: str = "milp", time_limit: float = 60.0) -> Bound:
    from .solve import EXACT_METHODS, certify_block
    from .subblock import build_subblock

    if mask is None:
        raise ValueError("the subblock bound needs the mask whose rest it fixes")
    block = build_subblock(problem, pattern, mask, rows=rows, window=window)
    out = certify_block(block, exact, block.keep_units(mask), time_limit=time_limit)
    rows = np.arange(problem.shape[0]) if rows is None else np.atleast_1d(np.asarray(rows, int))
    window = np.arange(problem.shape[1]) if window is None else np.asarray(window, int)
    scope = (f"masks equal to the given one outside rows {rows.tolist()} x {len(window)} columns "
             f"({exact}: {out.status})")
    return Bound("subblock", EXACT_METHODS[exact].problem, float(out.lower_bound), rows, None, scope, out.seconds,
                 out.iterations)


BOUNDS: dict[str, BoundMethod] = {m.name: m for m in (
    BoundMethod("box", "mask", "binary z relaxed to [0, 1] (Frank-Wolfe dual bound)", _box),
    BoundMethod("qcr", "mask", "z relaxed after moving one SDP diagonal of G onto the linear term", _qcr),
    BoundMethod("perspective", "refit", "the refit error's perspective in the keep indicators, relaxed",
                _perspective, needs_independent_rows=True),
    BoundMethod("dnn", "mask", "each row's lifted z z^T relaxed to doubly nonnegative (ADMM dual bound)", _dnn,
                needs_independent_rows=True),
    BoundMethod("subblock", "mask or refit", "an exact method on a sub-block, the rest of the mask fixed",
                _subblock),
)}


def applies(name: str, problem, pattern) -> str:
    """'' where bound `name` applies to (problem, pattern), else why not (one line)."""
    from .row_bounds import rows_independent

    method = BOUNDS[name]
    if name != "subblock" and not pattern.entrywise:
        return f"the {name} bound needs an entrywise pattern, not {pattern.name}"
    if name != "subblock" and problem.dense_target:
        return f"the {name} bound is for the problem of (W, G), not a dense-target problem"
    if method.needs_independent_rows and not rows_independent(pattern):
        return f"the {name} bound needs a pattern whose rows are independent, not {pattern.name}"
    return ""


def prove(name: str, problem, pattern, mask=None, rows=None, **options) -> Bound:
    """Bound `name` of `problem` under `pattern` (module doc), from keep mask `mask`, on `rows` (default all)."""
    if name not in BOUNDS:
        raise ValueError(f"unknown bound {name!r}; choose from {', '.join(BOUNDS)}")
    why = applies(name, problem, pattern)
    if why:
        raise ValueError(why)
    return BOUNDS[name].compute(problem, pattern, mask, rows=rows, **options)
