"""One row's neighbourhood solved exactly by branch and bound on QCR bounds (mask only, no HiGHS).

With the row's other decisions fixed, its error is a convex quadratic of the window's keep indicators m:

    f(m) = m^T Q m + c^T m + const,   Q = D_w G_SS D_w,   sum_S m = k   (the window's kept count),

(`row_window_quadratic`; with the dense target the linear term carries the cross Gram).  On binary m,
m^T diag(lam) m = lam^T m, so for lam >= 0 with Q - diag(lam) PSD (`shared_diagonal`, once per window)

    f(m) = m^T (Q - diag lam) m + (c + lam)^T m + const,

a convex function that is larger than f off the vertices: its minimum over a node's relaxed set
{lo <= m <= hi, sum m = k} (lo, hi: the branching fixes) bounds every mask below the node.  Nodes are
relaxed in batches by accelerated projected gradient, and each bound is the Frank-Wolfe certificate
f(x) + min_s grad f(x)^T (s - x) over the node's set, valid at any iterate (convexity), so a node is
pruned only on a proven bound.  Best-first; branching on the most fractional decision; every relaxed
point is rounded to a mask (its k largest entries) for the incumbent.  HiGHS's outer approximation
(`oa-qcr`) certifies windows of 16 to 32 decisions in 10 s on SmolLM2 rows; this reaches 64.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np

from .row_bounds import shared_diagonal


@dataclass
class WindowSolution:
    keep: np.ndarray          # the best window mask found (bool)
    value: float              # its row error
    lower_bound: float        # proven: no window mask has a smaller row error
    status: str               # 'optimal' (the bound met the value) or 'time_limit'
    nodes: int


def row_window_quadratic(problem, mask, row: int, window: np.ndarray):
    """(Q, c, const, start): row `row`'s error as f(m) = m^T Q m + c^T m + const over the keep indicators m
    of the columns `window`, every other column keeping its status in `mask`; start = the mask's m."""
    W, G = problem.float64()
    w = W[row]
    lin = problem.linear_term()[row].detach().double().cpu().numpy()
    keep = mask[row].detach().cpu().numpy().astype(bool)
    S = np.asarray(window)
    outside = w * keep
    outside[S] = 0.0
    wS = w[S]
    Q = wS[:, None] * G[np.ix_(S, S)] * wS[None, :]
    c = 2 * wS * (G[S] @ outside) - 2 * wS * lin[S]
    start = keep[S].astype(float)
    const = float(problem.row_errors(mask)[row]) - float(start @ Q @ start + c @ start)
    return Q, c, const, start


def project_capped(Y: np.ndarray, LO: np.ndarray, HI: np.ndarray, k: int) -> np.ndarray:
    """Each row of Y projected onto {LO <= m <= HI, sum m = k}: clip(y - t, LO, HI) with the shift t found
    by bisection, then solved exactly on the entries strictly between their bounds."""
    a, b = (Y - HI).min(1) - 1.0, (Y - LO).max(1) + 1.0
    for _ in range(60):
        t = 0.5 * (a + b)
        over = np.clip(Y - t[:, None], LO, HI).sum(1) > k
        a, b = np.where(over, t, a), np.where(over, b, t)
    t = 0.5 * (a + b)
    inside = (Y - t[:, None] > LO) & (Y - t[:, None] < HI)
    U = np.clip(Y - t[:, None], LO, HI)
    count = inside.sum(1)
    t = np.where(count > 0, ((Y * inside).sum(1) - (k - np.where(inside, 0.0, U).sum(1))) / np.maximum(count, 1), t)
    return np.clip(np.where(inside, Y - t[:, None], U), LO, HI)


def best_vertices(scores: np.ndarray, LO: np.ndarray, HI: np.ndarray, k: int) -> np.ndarray:
    """Per row, the vertex of {LO <= m <= HI, sum m = k} that keeps the free entries of largest score."""
    free = HI > LO
    room = np.rint(k - LO.sum(1)).astype(int)
    rank = np.argsort(np.argsort(np.where(free, -scores, np.inf), axis=1, kind="stable"), axis=1, kind="stable")
    return LO + (free & (rank < room[:, None]))


def relax_nodes(Qs, cs, LO, HI, k, X, step: float, stop: float, iters: int = 60):
    """(relaxed points, proven lower bounds) of a batch of nodes: accelerated projected gradient on
    x^T Qs x + cs^T x, restarted at every Frank-Wolfe check (every 10 steps); a node stops early once its
    bound reaches `stop` (it will be pruned) or meets its value."""
    X = project_capped(X, LO, HI, k)
    Y, t, bound = X.copy(), 1.0, np.full(len(X), -np.inf)
    for it in range(1, iters + 1):
        Xn = project_capped(Y - step * (2 * Y @ Qs + cs), LO, HI, k)
        tn = (1 + np.sqrt(1 + 4 * t * t)) / 2
        Y, X, t = Xn + (t - 1) / tn * (Xn - X), Xn, tn
        if it % 10 == 0 or it == iters:
            grad, value = 2 * X @ Qs + cs, ((X @ Qs) * X).sum(1) + X @ cs
            S = best_vertices(-grad, LO, HI, k)
            bound = np.maximum(bound, value + ((S - X) * grad).sum(1))
            if np.all((bound >= stop) | (value - bound <= 1e-10 * np.abs(value))):
                break
            Y, t = X.copy(), 1.0
    return X, bound


def qcr_diagonal(Q: np.ndarray) -> np.ndarray:
    """lam >= 0 with Q - diag(lam) PSD, maximising sum lam (`shared_diagonal`); zero where Q is singular
    (a zero weight in the window): the plain convex relaxation then."""
    try:
        return shared_diagonal(Q, np.ones(len(Q)), max_seconds=2.0)
    except ValueError:
        return np.zeros(len(Q))


def qcr_branch_and_bound(Q: np.ndarray, c: np.ndarray, k: int, start: np.ndarray, const: float = 0.0,
                         time_limit: float = 10.0, batch: int = 256) -> WindowSolution:
    """min m^T Q m + c^T m + const over m in {0,1}^n with sum m = k (module doc), from the feasible `start`."""
    n = len(c)
    lam = qcr_diagonal(Q)
    Qs, cs = Q - np.diag(lam), c + lam
    step = 1.0 / max(2 * float(np.linalg.eigvalsh(Qs)[-1]), 1e-300)
    best = np.asarray(start, float).copy()
    value = float(best @ Q @ best + c @ best)
    t0, nodes, tie = time.perf_counter(), 0, 1
    heap = [(-np.inf, 0, np.zeros(n), np.ones(n), best)]
    while heap and time.perf_counter() - t0 < time_limit:
        cut = value - 1e-9 * abs(value)
        batch_nodes = [node for node in (heapq.heappop(heap) for _ in range(min(batch, len(heap)))) if node[0] < cut]
        if not batch_nodes:
            continue
        LO, HI, X = (np.array([node[i] for node in batch_nodes]) for i in (2, 3, 4))
        X, bound = relax_nodes(Qs, cs, LO, HI, k, X, step, cut)
        nodes += len(batch_nodes)
        rounded = best_vertices(X, LO, HI, k)
        values = ((rounded @ Q) * rounded).sum(1) + rounded @ c
        if values.min() < value:
            value, best = float(values.min()), rounded[int(np.argmin(values))].astype(float)
        for child in branch(LO, HI, X, bound, value - 1e-9 * abs(value), k):
            heapq.heappush(heap, (child[0], tie, *child[1:]))
            tie += 1
    proven = min([node[0] for node in heap], default=value)
    status = "optimal" if not heap else "time_limit"
    return WindowSolution(best > 0.5, value + const, min(proven, value) + const, status, nodes)


def branch(LO, HI, X, bound, cut: float, k: int):
    """(bound, lo, hi, x) of both children of every node whose bound is below `cut`, fixing its most
    fractional free decision (a child that cannot keep exactly k is dropped)."""
    for lo, hi, x, b in zip(LO, HI, X, bound):
        free = np.nonzero(hi > lo)[0]
        if b >= cut or len(free) == 0:
            continue
        j = free[np.argmin(np.abs(x[free] - 0.5))]
        keep_j, drop_j = lo.copy(), hi.copy()
        keep_j[j], drop_j[j] = 1.0, 0.0
        if keep_j.sum() <= k:
            yield b, keep_j, hi, x
        if drop_j.sum() >= k:
            yield b, lo, drop_j, x
