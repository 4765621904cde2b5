"""SparseGPT: optimal-brain-surgeon pruning with lazy blocked updates.

With H = G + lam I (dampened) and U the upper Cholesky factor of H^-1, columns
are processed left to right.  Pruning w_j (or quantising it to itself when
kept) leaves error e = (w_j - q_j) / U_jj, which is pushed onto the columns not
yet processed: w_{j+1:} -= e U_{j, j+1:}.  Masks are chosen per block of B
columns by the OBS saliency w^2 / U_jj^2, with the budget of the pattern spread
over the blocks (exact count per group of the pattern), or, for patterns whose groups are local
in the columns (N:M), lazily when a group's first column is reached (the block size is rounded to a
multiple of the group span, so a group never straddles two blocks).
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import PruneResult, check_method, register


def _budget(total: int, start: int, stop: int, cols: int) -> int:
    """Integer share of `total` for columns [start, stop): the shares sum to `total`."""
    return round(total * stop / cols) - round(total * start / cols)


@register("sparsegpt", accepts=lambda p: not p.removes_inputs,
          handles="unstructured, per-row, N:M and row-block")
def sparsegpt(problem: LayerProblem, pattern: Pattern, blocksize: int = 128,
              percdamp: float = 0.01) -> PruneResult:
    check_method("sparsegpt", pattern)
    rows, cols = problem.shape
    W = problem.W.clone().float()
    H = problem.G.float().clone()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H = LayerProblem.dampen(H, percdamp)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    span = pattern.selection_span(cols)
    if span:
        blocksize = span * max(1, blocksize // span)
    budget = pattern.pruned_per_group(rows, cols)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err = torch.zeros_like(W1)
        if not span:
            saliency = W1 ** 2 / U1.diagonal()[None, :] ** 2
            keep[:, i1:i2] = pattern.project(saliency, _budget(budget, i1, i2, cols))
        for j in range(i2 - i1):
            col = i1 + j
            if span and col % span == 0:
                grp = W1[:, j:j + span] ** 2 / U1.diagonal()[j:j + span][None, :] ** 2
                keep[:, col:col + span] = pattern.project(grp)
            w = W1[:, j]
            q = w * keep[:, col]
            e = (w - q) / U1[j, j]
            W1[:, j:] -= e[:, None] * U1[j, j:][None, :]
            W1[:, j] = q
            Err[:, j] = e
        W[:, i1:i2] = W1
        W[:, i2:] -= Err @ U[i1:i2, i2:]
    return PruneResult(keep, (W * keep).to(problem.W.dtype), "sparsegpt")
