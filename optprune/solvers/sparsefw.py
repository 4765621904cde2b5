"""SparseFW: Frank-Wolfe on the convex relaxation of the keep mask, then top-k rounding.

Relaxation over M in C = {M in [0,1]^{out x in}, keep budget of the pattern (<= k)}:
    f(M) = tr((W - W*M) G (W - W*M)^T),   grad f(M) = -2 W * ((W - W*M) G) = -2 W * (H - (W*M) G),  H = W G.
Each step solves the LMO S = argmin_{S in C} <grad, S> (`Pattern.lmo`: the k most negative
gradient entries of every budget group of the pattern), and moves M <- M + 2/(t+2) (S - M).
A warm start fixes a fraction of Wanda's kept weights to 1 (they use up budget).
Because f is convex, every iterate certifies the relaxation (hence integer) bound
    f* >= f(M_t) + <grad f(M_t), S*_t - M_t>,
with S*_t the LMO over the *unrestricted* C, so the bound is valid for the
original problem whatever the warm start.  The returned lower_bound is the best of them.
The rounded mask is kept only if it beats the warm start (Wanda's mask) itself.
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .baselines import wanda_scores
from .base import PruneResult, check_method, register


def relaxed_objective(W: torch.Tensor, G: torch.Tensor, M: torch.Tensor):
    D = W - W * M
    DG = D @ G
    return float((DG * D).sum()), -2 * W * DG


@register("sparsefw", accepts=lambda p: p.entrywise, handles="entrywise (unstructured, per-row, N:M)")
def sparsefw(problem: LayerProblem, pattern: Pattern, iters: int = 200, warm_fraction: float = 0.5,
             fixed_mask: torch.Tensor | None = None, bound_every: int = 10) -> PruneResult:
    """warm_fraction: share of Wanda's kept weights (highest scores first) fixed to 1;
    the dual bound is evaluated every `bound_every` steps and at the end."""
    check_method("sparsefw", pattern)
    if not 0.0 <= warm_fraction < 1.0:
        raise ValueError("warm_fraction must lie in [0, 1)")
    W, G = problem.W, problem.G
    wscore = wanda_scores(problem)
    start = pattern.project(wscore)
    fixed = fixed_mask
    if fixed is None and warm_fraction > 0:   # the top warm_fraction of each budget group of Wanda's mask
        warm = pattern.keep_fraction(warm_fraction)
        fixed = warm.project(wscore) if warm is not None else None
    M = start.to(W.dtype)
    best_lb, history = -float("inf"), []
    for t in range(iters):
        f, grad = relaxed_objective(W, G, M)
        history.append(f)
        S_free = pattern.lmo(grad).to(W.dtype) if (fixed is None or t % bound_every == 0) else None
        if S_free is not None:
            best_lb = max(best_lb, f + float((grad * (S_free - M)).sum()))
        S = pattern.lmo(grad, fixed).to(W.dtype) if fixed is not None else S_free
        M = M + (2.0 / (t + 2.0)) * (S - M)
    f, grad = relaxed_objective(W, G, M)
    best_lb = max(best_lb, f + float((grad * (pattern.lmo(grad).to(W.dtype) - M)).sum()))
    # rounding: largest relaxed values; Wanda's score breaks ties
    tie = wscore / wscore.max().clamp_min(1e-30) * 1e-6
    score = M + tie
    if fixed is not None:
        score = torch.where(fixed, torch.full_like(score, float("inf")), score)
    mask = pattern.project(score)
    if problem.objective(mask) > problem.objective(start):   # rounding can lose: never worse than the warm start
        mask = start
    return PruneResult(mask, W * mask, "sparsefw", history=history, lower_bound=max(best_lb, 0.0))
