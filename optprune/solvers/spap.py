"""SPAP: structured (column / channel) pruning by a penalty method with alternating minimisation.

Keep k of the c input columns of W (for an MLP: the intermediate channels, i.e.
the columns of down_proj; gate/up lose the matching rows) and refit the rest:

    min_{V, m}  f(V) = tr((W - V) G (W - V)^T)   s.t.  V_{:,j} = 0 where m_j = 0,  m in {0,1}^c,  sum m = k.

Penalty form (d_j = G_jj makes it scale-free):
    L_rho(V, m) = f(V) + rho sum_j (1 - m_j) d_j ||V_{:,j}||^2,   m in [0,1]^c, sum m = k,
minimised alternately:
    V-step  closed-form least squares on the Gram matrix:  V = W G (G + rho diag((1 - m) d))^-1,
    m-step  an LP over the cardinality polytope:  m = top-k of d_j ||V_{:,j}||^2 (a vertex, so integral;
            for column groups, of the group sums),
while rho grows geometrically; as rho -> inf the penalty forces the dropped columns to zero, so the
last m is the selection.  Finally the kept columns are refit exactly (least squares, dampened);
the start (activation-norm channels, refit) is returned instead if it is better.
L_rho never increases within a fixed rho (each step minimises it in one block of variables).
"""
from __future__ import annotations

import torch

from ..patterns import Pattern, PatternError, select_mask
from ..problem import LayerProblem
from .base import PruneResult, register


def refit_columns(problem: LayerProblem, keep_cols: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """V with V_{:,S} = W G_{:,S} (G_SS + lam I)^-1 and zeros elsewhere (one solve for all rows)."""
    W, G = problem.W, problem.G
    S = torch.nonzero(keep_cols).flatten()
    G_SS = G[S][:, S]
    lam = percdamp * G.diagonal().mean()
    L = torch.linalg.cholesky(G_SS + lam * torch.eye(len(S), dtype=G.dtype, device=G.device))
    V = torch.zeros_like(W)
    V[:, S] = torch.cholesky_solve((W @ G[:, S]).T, L).T
    return V


@register("spap")
def spap(problem: LayerProblem, pattern: Pattern, rho0: float = 1e-3, growth: float = 2.0, steps: int = 24,
         inner: int = 2, percdamp: float = 0.01) -> PruneResult:
    if pattern.kind != "structured":
        raise PatternError("spap prunes whole columns: use the structured pattern")
    W, G = problem.W, problem.G
    rows, cols = W.shape
    g = pattern.group                     # columns per unit: 1, or e.g. a KV group of heads
    keep = (cols - pattern.pruned_per_row(cols)) // g
    d = G.diagonal().clamp_min(1e-12 * G.diagonal().max().clamp_min(1e-30))
    eye = torch.eye(cols, dtype=G.dtype, device=G.device)
    Gd = G + percdamp * d.mean() * eye
    WG = W @ G
    start = select_mask(W.abs() * d.sqrt()[None, :], pattern)[0]           # activation-norm start
    m = start.to(W.dtype)                                                   # per column, constant on groups
    history, rho = [], rho0
    for _ in range(steps):
        for _ in range(inner):
            L = torch.linalg.cholesky(Gd + rho * torch.diag((1 - m) * d))
            V = torch.cholesky_solve(WG.T, L).T
            unit_score = (d * (V * V).sum(0)).reshape(cols // g, g).sum(1)
            m_units = torch.zeros(cols // g, dtype=m.dtype, device=m.device)
            m_units[torch.topk(unit_score, keep, sorted=False).indices] = 1.0
            m_new = m_units.repeat_interleave(g)
            if torch.equal(m_new, m):
                break
            m = m_new
        D = W - V
        history.append(float(((D @ G) * D).sum() + rho * ((1 - m) * d * (V * V).sum(0)).sum()))
        rho *= growth
    keep_cols = m.bool()
    V = refit_columns(problem, keep_cols, percdamp)
    V0 = refit_columns(problem, start, percdamp)
    if problem.objective(W_hat=V0) < problem.objective(W_hat=V):   # never worse than the refit start
        keep_cols, V = start, V0
    mask = keep_cols.unsqueeze(0).expand(rows, cols).clone()
    return PruneResult(mask, V, "spap", history=history)
