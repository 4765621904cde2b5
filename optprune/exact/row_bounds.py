"""Rigorous lower bounds on whole layers (every full row), beyond the box relaxation.

Both bounds rest on one diagonal lam >= 0 with G - diag(lam) PSD, shared by all rows of a layer: the SDP
max sum_j a_j lam_j (a_j = mean_i w_ij^2) over that set, solved once per Gram by a log-det barrier method
(`shared_diagonal`), its PSD-ness verified in float64 and lam scaled down until it holds with a margin:

* mask only, `qcr_bound` (quadratic convex reformulation).  With z = 1 - M the pruned indicator,
  row i's error (w_i o z)^T G (w_i o z) equals, on every binary z (z_j^2 = z_j),
      q_i(z) = (w_i o z)^T (G - diag lam) (w_i o z) + sum_j w_ij^2 lam_j z_j,
  convex in z; its minimum over the relaxed pattern (`Pattern.lmo`'s set) is a lower bound, and any
  relaxed point certifies one by convexity (the Frank-Wolfe dual bound).  lam = 0 is the box bound.
* mask + refit, `perspective_bound`.  Row i's error min_v v^T G v - 2 b_i^T v + kappa_i over v supported
  on the kept set; with A = G - diag(lam) PSD and keep indicator k,
      P_i(v, k) = v^T A v + sum_j lam_j v_j^2 / k_j - 2 b_i^T v + kappa_i
  is jointly convex and equals the refit error at binary k (v_j = 0 where k_j = 0): the perspective
  relaxation.  It is minimised by alternating v (a linear solve) and k (closed form per budget group),
  and certified by the first-order bound of the joint function, with the v-residual charged over the
  ball ||v|| <= 2 ||b_i|| / lam_min(G) that holds every relaxed optimum.

Both bounds are valid whatever the iteration count: the iterates only decide how tight they are.
"""
from __future__ import annotations

import time
import numpy as np
import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .bounds import Bound


def psd_margin(G: np.ndarray) -> float:
    """Eigenvalue slack that covers float64 rounding in eigvalsh of G (|error| <= c n eps ||G||)."""
    return 64 * G.shape[0] * np.finfo(np.float64).eps * float(np.abs(G).sum(1).max())


def verified_diagonal(G: np.ndarray, lam: np.ndarray, base: float | None = None) -> np.ndarray:
    """lam >= 0 scaled down (G - theta diag(lam) = (1 - theta) G + theta (G - diag(lam))) until the smallest
    eigenvalue of G - diag(lam) clears a float64 rounding margin, so it is PSD despite eigvalsh's errors
    (base: G's smallest eigenvalue, when the caller has it)."""
    lam, margin = np.clip(lam, 0.0, None), psd_margin(G)
    base = float(np.linalg.eigvalsh(G)[0]) if base is None else base
    while (low := float(np.linalg.eigvalsh(G - np.diag(lam))[0])) < margin:
        if base <= 2 * margin:
            raise ValueError(f"the Gram's smallest eigenvalue is {base:.3g}: not positive definite; dampen it first")
        lam = (base - 2 * margin) / (base - low) * lam
    return lam


def shared_diagonal(G: np.ndarray, weights: np.ndarray | None = None, method: str = "barrier",
                    max_seconds: float = 120.0) -> np.ndarray:
    """lam >= 0 with G - diag(lam) PSD, maximising sum_j a_j lam_j (a: `weights`, default 1), by a log-det
    barrier Newton method (strictly feasible at every step, stopped at `max_seconds`); method 'eigmin':
    lam = lambda_min(G) 1.  Verified (`verified_diagonal`) either way."""
    G = 0.5 * (G + G.T)
    a = np.ones(G.shape[0]) if weights is None else np.asarray(weights, float)
    base = float(np.linalg.eigvalsh(G)[0])
    if not base > 2 * psd_margin(G):
        raise ValueError("the Gram is not positive definite (a bound needs G - diag(lam) PSD with lam >= 0 "
                         "useful): dampen it first")
    if method == "eigmin":
        return verified_diagonal(G, np.full(G.shape[0], base), base)
    if method != "barrier":
        raise ValueError(f"unknown diagonal method {method!r}: 'barrier' or 'eigmin'")
    scale = float(np.diag(G).mean())
    lam = _barrier_max_diagonal(G / scale, a / a.sum(), base / scale, time.perf_counter() + max_seconds) * scale
    return verified_diagonal(G, lam, base)


def _barrier_max_diagonal(G: np.ndarray, a: np.ndarray, base: float, deadline: float) -> np.ndarray:
    """max a^T x + t (logdet(G - diag x) + sum log x), t -> 0 (Newton steps, backtracking to stay inside),
    from x = base / 2 (base: G's smallest eigenvalue, > 0)."""
    n = G.shape[0]
    x = np.full(n, 0.5 * base)
    t = 1.0 / n
    while t > 1e-9 / n and time.perf_counter() < deadline:
        for _ in range(30):
            S = np.linalg.inv(G - np.diag(x))
            g = a - t * np.diag(S) + t / x
            step = np.linalg.solve(t * S * S + np.diag(t / x ** 2), g)
            x = x + _feasible_fraction(G, x, step) * step
            if float(g @ step) < 1e-10 or time.perf_counter() > deadline:
                break
        t *= 0.2
    return x


def _feasible_fraction(G: np.ndarray, x: np.ndarray, step: np.ndarray) -> float:
    """1 if G - diag(x + step) is PD, else 0.95 times the largest halving that is (0 if none)."""
    s = 1.0
    while s > 1e-12:
        try:
            if np.any(x + s * step <= 0):
                raise np.linalg.LinAlgError
            np.linalg.cholesky(G - np.diag(x + s * step))
            return 1.0 if s == 1.0 else 0.95 * s
        except np.linalg.LinAlgError:
            s *= 0.5
    return 0.0


def rows_independent(pattern: Pattern) -> bool:
    """Whether each row is a problem of its own (`Pattern.row_block` = 1: per-row, N:M)."""
    return pattern.row_block == 1


def check_bound_pattern(pattern: Pattern) -> None:
    if not pattern.entrywise:
        raise ValueError(f"the full-row bounds need an entrywise pattern, not {pattern.name}")


def group_threshold(kept, units: torch.Tensor, keep: int, hi: torch.Tensor, steps: int) -> torch.Tensor:
    """The smallest tau in [0, hi] (per group, bisection) with sum kept(units, tau) <= keep in every group;
    kept(units, tau) is nonincreasing in tau."""
    lo = torch.zeros_like(hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        over = kept(units, mid).sum(-1, keepdim=True) > keep
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return hi


def project_keep(Y: torch.Tensor, pattern: Pattern, metric: torch.Tensor | None = None, steps: int = 30) -> torch.Tensor:
    """Projection of Y onto the relaxed keep set {0 <= M <= 1, at most the budget kept per group} in the norm
    sum_j p_j (M_j - Y_j)^2 (p = `metric`, default 1): M = clip(Y - tau_g / p, 0, 1) with tau_g >= 0 found
    by bisection in every group at once, then solved exactly on the entries strictly between 0 and 1
    (`exact_threshold`).  The bounds do not rest on it: a Frank-Wolfe certificate holds at any point."""
    rows, cols = Y.shape
    U = pattern.to_units(Y)[..., 0]
    inv = torch.ones_like(U) if metric is None else 1 / pattern.to_units(metric)[..., 0]
    keep = U.shape[-1] - pattern.pruned_per_group(rows, cols)

    def kept(u, tau):
        return (u - tau * inv).clamp(0, 1)

    tau = group_threshold(kept, U, keep, (U / inv).max(-1, keepdim=True).values.clamp_min(0), steps)
    return pattern.from_units(kept(U, exact_threshold(U, inv, keep, tau))[..., None], rows, cols)


def exact_threshold(U: torch.Tensor, inv: torch.Tensor, keep: int, tau: torch.Tensor) -> torch.Tensor:
    """tau refined where the group's budget binds: with F the entries strictly inside (0, 1) at tau and n1
    those at 1, sum_F (u - t inv) + n1 = keep gives t = (sum_F u + n1 - keep) / sum_F inv; taken where it is
    >= 0 and keeps the group within its budget (else the bisection's tau, which does)."""
    V = U - tau * inv
    free = (V > 0) & (V < 1)
    ones = (V >= 1).sum(-1, keepdim=True)
    denom = (inv * free).sum(-1, keepdim=True)
    t = ((U * free).sum(-1, keepdim=True) + ones - keep) / denom.clamp_min(torch.finfo(U.dtype).tiny)
    slack = 64 * torch.finfo(U.dtype).eps * max(keep, 1)
    within = (U - t * inv).clamp(0, 1).sum(-1, keepdim=True) <= keep + slack
    use = (denom > 0) & (t >= 0) & (tau > 0) & within
    return torch.where(use, t, tau)


def row_curvatures(W: torch.Tensor, Gq: torch.Tensor, metric: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """lambda_max of each row's Hessian 2 D_w Gq D_w in the metric p (of P^-1/2 H P^-1/2; power iteration,
    batched over rows; 5% margin)."""
    root = metric.rsqrt()
    X = torch.ones_like(W)
    for _ in range(steps):
        X = root * W * ((W * root * X) @ Gq)
        X = X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    return 2.1 * ((root * W * ((W * root * X) @ Gq)) * X).sum(1).clamp_min(torch.finfo(W.dtype).tiny)


def _qcr_value_and_gradient(W, Gq, lin, M):
    D = W * (1 - M)
    DG = D @ Gq
    return (DG * D).sum(1) + (lin * (1 - M)).sum(1), -(2 * W * DG + lin)


def qcr_bound(problem: LayerProblem, pattern: Pattern, lam: np.ndarray | None, start: torch.Tensor | None = None,
              iters: int = 300, certify_every: int = 10, work_dtype: torch.dtype = torch.float32) -> Bound:
    """Accelerated projected gradient (FISTA in the Jacobi metric p_j = H_jj; a step per row when the pattern's
    rows are independent) on the relaxed q of the module doc, from keep mask `start`; returns the best Frank-Wolfe dual bound
    f(M) + <grad, S - M> (S = `Pattern.lmo(grad)`) met (lam None: the box bound).  Mask-only objective of
    a symmetric problem (W, G).  The iterates run in `work_dtype` (float32: twice the speed on a CPU); every
    certificate is evaluated in float64 at the iterate, and holds at any point (f convex: Gq is PSD)."""
    check_bound_pattern(pattern)
    if problem.dense_target:
        raise ValueError("qcr_bound is for the mask-only problem of (W, G); use perspective_bound for a dense target")
    t0 = time.perf_counter()
    W, G = (torch.from_numpy(a) for a in problem.float64())
    lam_t = torch.zeros(G.shape[0], dtype=torch.float64) if lam is None else torch.as_tensor(lam, dtype=torch.float64)
    Gq, lin = G - torch.diag(lam_t), W ** 2 * lam_t
    separable = rows_independent(pattern)
    Wk, Gk, link = W.to(work_dtype), Gq.to(work_dtype), lin.to(work_dtype)
    metric = (2 * Wk ** 2 * Gk.diagonal()).clamp_min(1e-12 * float((W ** 2).max() * Gq.diagonal().max()))
    L = row_curvatures(Wk, Gk, metric)
    step = (1 / L if separable else torch.full_like(L, 1 / float(L.max())))[:, None] / metric
    M = (pattern.project(W.abs()) if start is None else start.cpu()).to(work_dtype)
    Y, t, best = M.clone(), 1.0, torch.full((W.shape[0],), -float("inf"), dtype=torch.float64)
    for k in range(iters + 1):
        if k % certify_every == 0 or k == iters:
            best = _keep_best(best, frank_wolfe_bound(W, Gq, lin, M.double(), pattern), separable)
        if k == iters:
            break
        _, grad_y = _qcr_value_and_gradient(Wk, Gk, link, Y)
        M_next = project_keep(Y - step * grad_y, pattern, metric)
        if float((grad_y * (M_next - M)).sum()) > 0:   # adaptive restart: the momentum points uphill
            t = 1.0
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        Y, M, t = M_next + ((t - 1) / t_next) * (M_next - M), M_next, t_next
    per_row = best.clamp_min(0).numpy() if separable else None
    total = float(per_row.sum()) if separable else max(float(best[0]), 0.0)
    return Bound("box" if lam is None else "qcr", "mask", total, np.arange(W.shape[0]), per_row,
                 seconds=time.perf_counter() - t0, iterations=iters)


def frank_wolfe_bound(W, Gq, lin, M, pattern: Pattern) -> torch.Tensor:
    """Per row f(M) + <grad f(M), S - M>, S = `Pattern.lmo(grad)`: below the relaxed minimum at any M (f convex),
    in float64."""
    f, grad = _qcr_value_and_gradient(W, Gq, lin, M)
    return f + (grad * (pattern.lmo(grad).double() - M)).sum(1)


def _keep_best(best: torch.Tensor, gap: torch.Tensor, separable: bool) -> torch.Tensor:
    """The best certificate so far: per row when rows are independent, else of the whole layer."""
    return torch.maximum(best, gap) if separable else torch.maximum(best, gap.sum().expand_as(best))


def keep_update(cost: torch.Tensor, pattern: Pattern, floor: float = 1e-12, steps: int = 60) -> torch.Tensor:
    """argmin sum_j cost_j / k_j over the relaxed keep set (cost >= 0): k_j = min(1, sqrt(cost_j) / tau_g)
    with tau_g set by bisection so that each group keeps its budget (all of it: more never costs more)."""
    rows, cols = cost.shape
    root = pattern.to_units(cost.clamp_min(0).sqrt())[..., 0]
    keep = root.shape[-1] - pattern.pruned_per_group(rows, cols)

    def kept(r, tau):
        return (r / tau).clamp(max=1)

    tau = group_threshold(kept, root, keep, root.max(-1, keepdim=True).values.clamp_min(1e-300) * root.shape[-1], steps)
    return pattern.from_units(kept(root, tau).clamp(min=floor)[..., None], rows, cols)


def _perspective_solve(G, lam, B, K):
    """v_i = (G + diag(lam (1/k_i - 1)))^-1 b_i for each row (batched Cholesky)."""
    A = G.expand(len(K), *G.shape) + torch.diag_embed(lam * (1 / K - 1))
    return torch.cholesky_solve(B[..., None], torch.linalg.cholesky(A))[..., 0]


def _perspective_certificate(G, lam, B, kappa, V, K, pattern, radius):
    """Each row's rigorous bound: P(v, k) + min_S <dP/dk, S - k> - |dP/dv| (|v| + radius)."""
    Av = V @ G - lam * V
    value = ((Av * V).sum(1) + (lam * V ** 2 / K).sum(1) - 2 * (B * V).sum(1) + kappa)
    grad_k = -lam * V ** 2 / K ** 2
    slope = (grad_k * (pattern.lmo(grad_k).double() - K)).sum(1)
    residual = (2 * (Av + lam * V / K - B)).norm(dim=1)
    return value + slope - residual * (V.norm(dim=1) + radius)


def perspective_bound(problem: LayerProblem, pattern: Pattern, lam: np.ndarray, rows=None,
                      start: torch.Tensor | None = None, iters: int = 30, chunk: int = 64) -> Bound:
    """The perspective relaxation of mask + refit (module doc) on `rows` (default all) of a row-separable
    pattern, minimised by alternating v and k from keep mask `start`; each row's best certified bound."""
    check_bound_pattern(pattern)
    if not rows_independent(pattern):
        raise ValueError("perspective_bound needs a pattern whose rows are independent (per-row, N:M)")
    t0 = time.perf_counter()
    W, G = (torch.from_numpy(a) for a in problem.float64())
    B, kappa = (torch.from_numpy(a) for a in problem.linear64())
    rows = np.arange(W.shape[0]) if rows is None else np.asarray(rows)
    lam_t = torch.as_tensor(lam, dtype=torch.float64)
    lam_min = float(np.linalg.eigvalsh(G.numpy())[0]) - psd_margin(G.numpy())
    if lam_min <= 0:
        raise ValueError("perspective_bound needs a positive definite Gram (its smallest eigenvalue is "
                         f"{lam_min:.3g}): dampen it first")
    out = []
    for part in np.array_split(rows, max(1, -(-len(rows) // chunk))):
        Bp, kp = B[part], kappa[part]
        K = (pattern.project(W[part].abs()) if start is None else start.cpu()[part]).double().clamp(1e-12, 1)
        radius = 2 * Bp.norm(dim=1) / lam_min
        best = torch.full((len(part),), -float("inf"), dtype=torch.float64)
        for _ in range(iters):
            V = _perspective_solve(G, lam_t, Bp, K)
            best = torch.maximum(best, _perspective_certificate(G, lam_t, Bp, kp, V, K, pattern, radius))
            K = keep_update(lam_t * V ** 2, pattern)
        out.append(best.clamp_min(0))
    per_row = torch.cat(out).numpy()
    return Bound("perspective", "refit", float(per_row.sum()), rows, per_row, seconds=time.perf_counter() - t0,
                 iterations=iters)
