"""One row's neighbourhood solved exactly by branch and bound on QCR bounds (mask only, no HiGHS).

With the row's other decisions fixed, its error is a convex quadratic of the window's keep indicators m:

    f(m) = m^T Q m + c^T m + const,   Q = D_w G_SS D_w,   sum_S m = k   (the window's kept count;
                                                                       under N:M one such sum per group)

(`row_window_quadratic`, `Groups`; with the dense target the linear term carries the cross Gram).  On binary m,
m^T diag(lam) m = lam^T m, so for lam >= 0 with Q - diag(lam) PSD (`shared_diagonal`, once per window)

    f(m) = m^T (Q - diag lam) m + (c + lam)^T m + const,

a convex function that is larger than f off the vertices: its minimum over a node's relaxed set
{lo <= m <= hi, group sums = k} (lo, hi: the branching fixes) bounds every mask below the node.  Nodes are
relaxed in batches by accelerated projected gradient, and each bound is the Frank-Wolfe certificate
f(x) + min_s grad f(x)^T (s - x) over the node's set, valid at any iterate (convexity), so a node is
pruned only on a proven bound.  Best-first; branching on the most fractional decision; every relaxed
point is rounded to a mask (each group's k_g largest entries) for the incumbent.  HiGHS's outer approximation
(`oa-qcr`) certifies windows of 16 to 32 decisions in 10 s on SmolLM2 rows; this reaches 64.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from functools import cached_property

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


@dataclass(frozen=True)
class Groups:
    """The window's budget groups: contiguous runs of its decisions (`sizes`, in column order), group g
    keeping exactly `keep[g]` of its entries (per-row: one group; N:M: the groups the window touches)."""
    sizes: np.ndarray
    keep: np.ndarray

    @cached_property
    def starts(self) -> np.ndarray:
        """Each group's first position (computed once: every projection step sums by group)."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)

    def sums(self, X: np.ndarray) -> np.ndarray:
        """Per row of X, the sum of each group's entries (B x G)."""
        return np.add.reduceat(X, self.starts, axis=1)

    def spread(self, T: np.ndarray) -> np.ndarray:
        """A per-group value (B x G) copied onto the group's entries (B x n)."""
        return np.repeat(T, self.sizes, axis=1)


def window_groups(labels: np.ndarray, start: np.ndarray) -> Groups:
    """The groups of a window from each decision's group label (nondecreasing, as the columns are sorted)
    and the feasible `start`, whose kept count per group every window mask must keep."""
    labels = np.asarray(labels)
    if np.any(np.diff(labels) < 0):
        raise ValueError("a window's group labels must be nondecreasing (columns in order)")
    _, group_of, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return Groups(sizes, np.rint(np.bincount(group_of, weights=np.asarray(start, float))))


def as_groups(k, n: int) -> Groups:
    """`k` itself when it is a `Groups`, else one group of all n decisions keeping k."""
    return k if isinstance(k, Groups) else Groups(np.array([n]), np.array([float(k)]))


def project_capped(Y: np.ndarray, LO: np.ndarray, HI: np.ndarray, k) -> np.ndarray:
    """Each row of Y projected onto {LO <= m <= HI, sum over group g of m = k_g} (k: an int for one group,
    or `Groups`): per group clip(y - t_g, LO, HI), each shift t_g found by bisection, then solved exactly on
    the entries strictly between their bounds."""
    groups = as_groups(k, Y.shape[1])
    G = len(groups.sizes)
    a = np.repeat(((Y - HI).min(1) - 1.0)[:, None], G, axis=1)
    b = np.repeat(((Y - LO).max(1) + 1.0)[:, None], G, axis=1)
    for _ in range(60):
        t = 0.5 * (a + b)
        over = groups.sums(np.clip(Y - groups.spread(t), LO, HI)) > groups.keep
        a, b = np.where(over, t, a), np.where(over, b, t)
    t = 0.5 * (a + b)
    T = groups.spread(t)
    inside = (Y - T > LO) & (Y - T < HI)
    U = np.clip(Y - T, LO, HI)
    count = groups.sums(inside.astype(float))
    exact = (groups.sums(Y * inside) - (groups.keep - groups.sums(np.where(inside, 0.0, U)))) / np.maximum(count, 1)
    T = groups.spread(np.where(count > 0, exact, t))
    return np.clip(np.where(inside, Y - T, U), LO, HI)


def best_vertices(scores: np.ndarray, LO: np.ndarray, HI: np.ndarray, k) -> np.ndarray:
    """Per row, the vertex of {LO <= m <= HI, group sums = k} that keeps, in each group, the free entries
    of largest score."""
    groups = as_groups(k, scores.shape[1])
    free = HI > LO
    room = np.rint(groups.keep - groups.sums(LO)).astype(int)
    label = np.broadcast_to(np.repeat(np.arange(len(groups.sizes)), groups.sizes), scores.shape)
    order = np.lexsort((np.where(free, -scores, np.inf), label), axis=-1)
    rank = np.argsort(order, axis=1, kind="stable") - np.repeat(groups.starts, groups.sizes)    # within its group
    return LO + (free & (rank < groups.spread(room)))


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


def qcr_branch_and_bound(Q: np.ndarray, c: np.ndarray, k, start: np.ndarray, const: float = 0.0,
                         time_limit: float = 10.0, batch: int = 256) -> WindowSolution:
    """min m^T Q m + c^T m + const over m in {0,1}^n with sum m = k, or with each group's sum fixed when k
    is `Groups` (module doc), from the feasible `start`."""
    n = len(c)
    k = as_groups(k, n)
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


def branch(LO, HI, X, bound, cut: float, k: Groups):
    """(bound, lo, hi, x) of both children of every node whose bound is below `cut`, fixing its most
    fractional free decision (a child that cannot keep exactly each group's count is dropped)."""
    for lo, hi, x, b in zip(LO, HI, X, bound):
        free = np.nonzero(hi > lo)[0]
        if b >= cut or len(free) == 0:
            continue
        j = free[np.argmin(np.abs(x[free] - 0.5))]
        keep_j, drop_j = lo.copy(), hi.copy()
        keep_j[j], drop_j[j] = 1.0, 0.0
        if np.all(k.sums(keep_j[None])[0] <= k.keep):
            yield b, keep_j, hi, x
        if np.all(k.sums(drop_j[None])[0] >= k.keep):
            yield b, lo, drop_j, x
