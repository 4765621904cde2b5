"""SPAP: structured (column / channel) pruning by a penalty method with alternating minimisation.

Keep k of the c input columns of W (for an MLP: the intermediate channels, i.e.
the columns of down_proj; gate/up lose the matching rows) and refit the rest:

    min_{V, m}  f(V) = tr((W - V) G (W - V)^T)   s.t.  V_{:,j} = 0 where m_j = 0,  m in {0,1}^c,  sum m = k.

Penalty form (`formulations.penalty`; d_j = G_jj makes it scale-free, lam = the dampening):
    L_rho(V, m) = f(V) + lam ||V||_F^2 + rho sum_j (1 - m_j) d_j ||V_{:,j}||^2,   m in [0,1]^c, sum m = k,
minimised alternately:
    V-step  closed-form least squares on the Gram matrix:  V = W G (G + lam I + rho diag((1 - m) d))^-1,
    m-step  an LP over the cardinality polytope:  m = top-k of d_j ||V_{:,j}||^2 (a vertex, so integral;
            for column groups, of the group sums),
while rho grows geometrically; as rho -> inf the penalty forces the dropped columns to zero, so the
last m is the selection.  Finally the kept columns are refit exactly (least squares, dampened);
the start (activation-norm channels, refit) is returned instead if it is better.
L_rho never increases within a fixed rho (each step minimises it in one block of variables);
the recorded history is f(V) + rho sum_j (1 - m_j) d_j ||V_j||^2 (the ridge term left out).
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import PruneResult, check_method, register


def spap_v_step(WG: torch.Tensor, Gd: torch.Tensor, m: torch.Tensor, d: torch.Tensor, rho: float) -> torch.Tensor:
    """argmin_V L_rho(V, m) (formulations.penalty.penalty_v_step): V = W G (G + lam I + rho diag((1 - m) d))^-1."""
    L = torch.linalg.cholesky(Gd + rho * torch.diag((1 - m) * d))
    return torch.cholesky_solve(WG.T, L).T


def spap_m_step(V: torch.Tensor, d: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """argmin_m L_rho(V, m) (formulations.penalty.penalty_m_step): keep the `keep` units of largest
    sum_{j in unit} d_j ||V_:,j||^2, a vertex of the cardinality polytope."""
    unit_score = (d * (V * V).sum(0)).reshape(-1, group).sum(1)
    m_units = torch.zeros(len(unit_score), dtype=V.dtype, device=V.device)
    m_units[torch.topk(unit_score, keep, sorted=False).indices] = 1.0
    return m_units.repeat_interleave(group)


@register("spap", accepts=lambda p: p.removes_inputs, handles="column (structured)")
def spap(problem: LayerProblem, pattern: Pattern, rho0: float = 1e-3, growth: float = 2.0, steps: int = 24,
         inner: int = 2, percdamp: float = 0.01) -> PruneResult:
    check_method("spap", pattern)
    W, G = problem.W, problem.G
    rows, cols = W.shape
    g = pattern.group                     # columns per unit: 1, or e.g. a KV group of heads
    keep = (cols - pattern.pruned_per_row(cols)) // g
    d = G.diagonal().clamp_min(1e-12 * G.diagonal().max().clamp_min(1e-30))
    Gd = problem.damped_gram(percdamp)
    WG = W @ G
    start = pattern.project(W.abs() * d.sqrt()[None, :])[0]           # activation-norm start
    m = start.to(W.dtype)                                                   # per column, constant on groups
    history, rho = [], rho0
    for _ in range(steps):
        for _ in range(inner):
            V = spap_v_step(WG, Gd, m, d, rho)
            m_new = spap_m_step(V, d, keep, g)
            if torch.equal(m_new, m):
                break
            m = m_new
        D = W - V
        history.append(float(((D @ G) * D).sum() + rho * ((1 - m) * d * (V * V).sum(0)).sum()))
        rho *= growth
    keep_cols = m.bool()
    V = problem.refit_columns(keep_cols, percdamp)
    V0 = problem.refit_columns(start, percdamp)
    if problem.objective(W_hat=V0) < problem.objective(W_hat=V):   # never worse than the refit start
        keep_cols, V = start, V0
    mask = keep_cols.unsqueeze(0).expand(rows, cols).clone()
    return PruneResult(mask, V, "spap", history=history)
