"""SparseSwaps: exact best 1-swap local search per row, from any warm-start mask.

Row i with pruned residual r = w * (1 - m) has error r^T G r; keep c = G r.
Swapping a kept entry a (becomes pruned) with a pruned entry b (becomes kept)
changes r by w_a e_a - w_b e_b, so the new error is exactly
    f + 2 w_a c_a - 2 w_b c_b + w_a^2 G_aa + w_b^2 G_bb - 2 w_a w_b G_ab.
Every row takes its best swap while it lowers the error (rows are independent:
swaps keep each row's count, so per-layer and per-row budgets both hold;
for N:M, a and b must share a group).  The search ends at a local optimum:
no improving 1-swap is left, which a final full scan of all pairs confirms.
To stay cheap on a CPU, ordinary steps look only at the `candidates` cheapest
entries on each side; the confirming scan always looks at every pair.
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import PruneResult, METHODS, check_method, register


def _best_swaps(W, G, gdiag, pruned, C, rows, cand, m, tol):
    """Best (delta, a, b) for `rows`: all pairs (cand=None), the `cand` cheapest
    per side, or (m > 0) all pairs inside each N:M group."""
    w, z, c = W[rows], pruned[rows], C[rows]
    inf = torch.tensor(float("inf"), dtype=W.dtype, device=W.device)
    cost_a = torch.where(z, inf, 2 * w * c + w * w * gdiag)       # prune a kept a
    cost_b = torch.where(z, -2 * w * c + w * w * gdiag, inf)      # restore a pruned b
    R, d = w.shape
    if m:
        ng = d // m
        Gb = G.reshape(ng, m, ng, m).diagonal(dim1=0, dim2=2).permute(2, 0, 1)   # (ng, m, m)
        wg = w.reshape(R, ng, m)
        delta = cost_a.reshape(R, ng, m, 1) + cost_b.reshape(R, ng, 1, m) \
            - 2 * wg[..., :, None] * wg[..., None, :] * Gb[None]
        best, flat = torch.nan_to_num(delta, nan=float("inf")).reshape(R, -1).min(1)
        grp, ij = flat // (m * m), flat % (m * m)
        return best, grp * m + ij // m, grp * m + ij % m
    if cand is None:
        ia = ib = torch.arange(d, device=W.device).expand(R, -1)
        delta = cost_a[:, :, None] + cost_b[:, None, :] - 2 * w[:, :, None] * w[:, None, :] * G[None]
    else:
        ia = torch.topk(cost_a, min(cand, d), dim=1, largest=False).indices
        ib = torch.topk(cost_b, min(cand, d), dim=1, largest=False).indices
        wa, wb = torch.gather(w, 1, ia), torch.gather(w, 1, ib)
        delta = torch.gather(cost_a, 1, ia)[:, :, None] + torch.gather(cost_b, 1, ib)[:, None, :] \
            - 2 * wa[:, :, None] * wb[:, None, :] * G[ia[:, :, None], ib[:, None, :]]
    best, flat = torch.nan_to_num(delta, nan=float("inf")).reshape(R, -1).min(1)
    a = torch.gather(ia, 1, (flat // ib.shape[1])[:, None])[:, 0]
    b = torch.gather(ib, 1, (flat % ib.shape[1])[:, None])[:, 0]
    return best, a, b


def swap_search(problem: LayerProblem, mask: torch.Tensor, pattern: Pattern, max_iter: int = 100,
                candidates: int | None = 64, chunk_elems: int = 2 ** 24, rel_tol: float = 1e-9):
    """Local search from `mask`; returns (mask, history of total error).

    A row is *confirmed* once a full scan finds no improving swap; it stays so
    until it changes.  Cheap candidate steps run on unconfirmed rows; full scans
    only on rows the cheap steps cannot improve any more."""
    W, G = problem.W, problem.G
    rows, cols = problem.shape
    pruned = ~problem.check_mask_shape(mask)
    gdiag = G.diagonal()[None, :]
    span = pattern.swap_span(cols)
    m = span if span < cols else 0
    if m:
        candidates = None                       # groups are small: always scan them whole
    C = (W * pruned) @ G
    err = ((W * pruned) * C).sum(1)
    tol = rel_tol * (((W @ G) * W).sum(1)).clamp_min(1e-30)
    history = [float(err.sum())]
    cheap = torch.ones(rows, dtype=torch.bool, device=W.device) if candidates is not None \
        else torch.zeros(rows, dtype=torch.bool, device=W.device)
    confirmed = torch.zeros(rows, dtype=torch.bool, device=W.device)
    for _ in range(max_iter):
        full = not bool(cheap.any())
        idx = torch.nonzero(~confirmed if full else cheap).flatten()
        if len(idx) == 0:
            break
        per_row = cols * (m or cols) if full else min(candidates, cols) ** 2
        chunk = max(1, chunk_elems // per_row)
        for s in range(0, len(idx), chunk):
            r = idx[s:s + chunk]
            best, a, b = _best_swaps(W, G, gdiag, pruned, C, r, None if full else candidates, m, tol)
            good = best < -tol[r]
            if full:
                confirmed[r[~good]] = True
            cheap[r] = good & (candidates is not None)
            if bool(good.any()):
                rg, ag, bg = r[good], a[good], b[good]
                pruned[rg, ag] = True
                pruned[rg, bg] = False
                C[rg] += W[rg, ag][:, None] * G[ag] - W[rg, bg][:, None] * G[bg]
                err[rg] += best[good]
        history.append(float(err.sum()))
    return ~pruned, history


@register("sparseswaps", accepts=lambda p: p.swap_span(1) is not None,
          handles="single-entry swap (unstructured, per-row, N:M)")
def sparseswaps(problem: LayerProblem, pattern: Pattern, warm_start: str | torch.Tensor = "wanda",
                max_iter: int = 100, candidates: int | None = 64, refit: bool = False) -> PruneResult:
    check_method("sparseswaps", pattern)
    if isinstance(warm_start, str):
        if warm_start == "sparseswaps" or warm_start not in METHODS:
            raise ValueError(f"unknown warm start {warm_start!r}")
        start = METHODS[warm_start](problem, pattern).mask
    else:
        start = warm_start
    mask, history = swap_search(problem, start, pattern, max_iter, candidates)
    weight = problem.refit(mask) if refit else problem.W * mask
    return PruneResult(mask, weight, "sparseswaps", history=history)
