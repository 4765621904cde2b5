"""mAIHT: monotone accelerated iterative hard thresholding on the l0 problem.

    min_V  f(V) = tr((W - V) G (W - V)^T)   s.t.  V has the pattern's sparsity,
solved in Jacobi-scaled coordinates (V~ = V diag(s), G~ = diag(s)^-1 G diag(s)^-1,
s_j = sqrt(G_jj)), where G~ has unit diagonal and the step 1/L, L = 2 lambda_max(G~),
is far larger than in raw coordinates.  Each iteration forms
    plain        V_p = T(X_t - eta grad f(X_t))                         (eta = 1/L: a descent step)
    accelerated  V_a = T(Y_t - eta_a grad f(Y_t)),  Y_t = X_t + (t-1)/(t+2) (X_t - X_{t-1})
with the bolder diagonal-Newton step eta_a = 1/2 (G~ has unit diagonal), and
keeps whichever has the lower penalised objective f + lam ||.||_0, so the
sequence is monotone while the bold step lets the support move.
T is the l0 prox, a hard threshold at sqrt(2 lam eta), with a sparsity-tracking
penalty: lam (per layer, or per row for per-row) is rescaled every step so that
the nonzero count tracks the target; N:M uses the exact projection instead.
At the end the iterate is projected to the exact target pattern and refit.
"""
from __future__ import annotations


import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import PruneResult, check_method, register


def _lambda_max(G: torch.Tensor, iters: int = 50) -> float:
    v = torch.ones(G.shape[0], dtype=G.dtype, device=G.device)
    for _ in range(iters):
        v = G @ v
        v = v / v.norm().clamp_min(1e-30)
    return float(v @ G @ v)


def maiht_iterates(problem: LayerProblem, pattern: Pattern, iters: int = 100, track: float = 0.5):
    """The mAIHT iterates: yields (X, lam, s) per step, X in scaled coordinates (V = X / s), lam the
    l0 penalty (a scalar, or a column per row) under which X was chosen.  With track = 0, lam is
    fixed and F(V) = f(V) + lam ||V||_0 (`formulations.l0.l0_penalized`) never increases."""
    check_method("maiht", pattern)
    W, G, s = _jacobi_scaled(problem)
    eta = 1.0 / (2.0 * _lambda_max(G))
    eta_bold = max(eta, 0.5)
    rows, cols = W.shape
    target_nnz = rows * cols - pattern.pruned_total(rows, cols)
    per_row = pattern.budget_scope == "row"
    use_penalty = pattern.budget_scope in ("layer", "row")     # one budget per layer or row: track it

    def f_and_grad(V):
        """(per-row f, grad f) from one product: D = W - V, f_i = (D G D^T)_ii, grad = -2 D G."""
        D = W - V
        DG = D @ G
        return (DG * D).sum(1), -2.0 * DG

    X = W * pattern.project(W.abs())
    fX, gX = f_and_grad(X)
    lam = _initial_penalty(X - eta * gX, pattern, per_row, target_nnz, eta)

    def prox(U):
        if not use_penalty:
            return U * pattern.project(U.abs())
        return U * (U.abs() > torch.sqrt(2 * lam * eta))

    def penalised(V, f):
        nnz = (V != 0).sum(1, keepdim=True).to(V.dtype)
        if per_row:
            return f + (lam * nnz)[:, 0]
        return f.sum() + lam[0, 0] * nnz.sum()

    X_prev = X
    yield X, lam, s, fX
    for t in range(1, iters + 1):
        Y = X + (t - 1) / (t + 2) * (X - X_prev)
        Va, Vp = prox(Y - eta_bold * f_and_grad(Y)[1]), prox(X - eta * gX)
        (fa_rows, ga), (fp_rows, gp) = f_and_grad(Va), f_and_grad(Vp)
        fa, fp = penalised(Va, fa_rows), penalised(Vp, fp_rows)
        X_prev = X
        if per_row:
            pick = (fa <= fp)[:, None]
            X, fX, gX = torch.where(pick, Va, Vp), torch.where(pick[:, 0], fa_rows, fp_rows), torch.where(pick, ga, gp)
        else:
            X, fX, gX = (Va, fa_rows, ga) if fa <= fp else (Vp, fp_rows, gp)
        yield X, lam, s, fX
        if use_penalty:
            lam = _tracked_penalty(lam, X, pattern, per_row, target_nnz, track)


def _jacobi_scaled(problem: LayerProblem):
    """(W diag(s), diag(s)^-1 G diag(s)^-1, s) with s_j = sqrt(G_jj) (floored at 1e-12 of the largest)."""
    W0, G0 = problem.W, problem.G
    s = G0.diagonal().clamp_min(1e-12 * G0.diagonal().max().clamp_min(1e-30)).sqrt()
    return W0 * s[None, :], G0 / s[:, None] / s[None, :], s


def _tracked_penalty(lam, X, pattern, per_row, target_nnz, track):
    """Sparsity tracking: lam * clamp(nnz / target, 0.5, 2)^(2 track), per row or per layer: raised when X is
    too dense, lowered when too sparse."""
    if per_row:
        cols = X.shape[1]
        ratio = (X != 0).sum(1, keepdim=True).to(X.dtype) / (cols - pattern.pruned_per_row(cols))
    else:
        ratio = torch.tensor(float((X != 0).sum()) / target_nnz, dtype=X.dtype, device=X.device)
    return lam * torch.clamp(ratio, 0.5, 2.0) ** (2 * track)


def _initial_penalty(U, pattern, per_row, target_nnz, eta):
    """lam from the target-th largest |.| after one step, so the threshold starts at the right scale."""
    cols = U.shape[1]
    k_row = cols - pattern.pruned_per_row(cols)
    if per_row:
        thr = U.abs().sort(1, descending=True).values[:, k_row - 1:k_row]
    else:
        thr = U.abs().reshape(-1).sort(descending=True).values[target_nnz - 1].reshape(1, 1)
    return thr ** 2 / (2 * eta)


@register("maiht", accepts=lambda p: p.entrywise, handles="entrywise (unstructured, per-row, N:M)")
def maiht(problem: LayerProblem, pattern: Pattern, iters: int = 100, track: float = 0.5,
          refit: bool = True) -> PruneResult:
    history = []
    for X, _, s, fX in maiht_iterates(problem, pattern, iters, track):
        history.append(float(fX.sum()))
    # final projection to the exact pattern (scaled magnitudes), back to raw coordinates, refit
    W = problem.W * s[None, :]
    mask = pattern.project(X.abs() + 1e-12 * W.abs())
    V = (X / s[None, :]) * mask
    if refit:
        V = problem.refit(mask, V)
    return PruneResult(mask, V.to(problem.W.dtype), "maiht", history=history)
