"""Neighbourhood certificates at full-row scale.

A row's mask makes d keep/prune decisions; proving the whole row optimal is out of reach (d = 576 to 1536
on SmolLM2), but its most ambiguous decisions can be re-decided exactly.  For row i, the decisions are
ranked by the OBS-style saliency w_j^2 G_jj; the `size` decisions nearest the keep/prune threshold are
freed (where the row is one budget group, per-row or unstructured: the weakest kept and the strongest
pruned, half each where the row allows; under N:M: whole groups, those whose weakest kept and strongest
pruned entries are closest), every other entry keeps its status, and the window is solved exactly with
each group's kept count fixed: by default by `bnb-qcr`, a batched branch and bound on QCR bounds
(`window_bnb`, mask only: 64 decisions in about 10 s on SmolLM2 rows), or by HiGHS on the sub-block
(`build_subblock`; `oa-qcr`: outer approximation of the SDP convex reformulation, mask only; any
registered exact method, e.g. `refit-oa` for mask + refit).  A finished solve certifies the returned mask
(the given one, or the better mask the window held): "no better mask differs from it only inside these
positions".  `certify_rows` grows the window while a time budget allows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .solve import block_value, certify_block
from .subblock import build_subblock
from .window_bnb import qcr_branch_and_bound, row_window_quadratic, window_groups


@dataclass
class NeighbourhoodCertificate:
    row: int
    positions: list[int]             # the freed columns
    value: float                     # the (last) solve's starting mask's value on the neighbourhood problem
    optimum: float                   # best value found inside the neighbourhood
    lower_bound: float               # proven
    status: str
    seconds: float
    improved_mask: torch.Tensor | None = field(default=None, repr=False)   # the layer mask, when better
    start_value: float | None = None  # the row's value before the improvements of smaller windows (certify_rows)

    @property
    def certified(self) -> bool:
        """Proven: no mask that differs from the returned one (the improved mask, if any) only inside
        `positions` is better (rel. 1e-7).  An improved mask is the window's optimum, so it is certified in
        the same positions as soon as the solve finished."""
        return self.status == "optimal"

    @property
    def original_value(self) -> float:
        """The row's value under the mask given, before any improvement."""
        return self.value if self.start_value is None else self.start_value

    def statement(self) -> str:
        better = (f"a better mask ({self.original_value:.6g} -> {self.optimum:.6g})"
                  if self.improved_mask is not None else "")
        if self.certified:
            return (f"row {self.row}: {better + ', and ' if better else ''}no better mask differs from "
                    f"{'it' if better else 'this one'} only inside these {len(self.positions)} positions")
        if better:
            return f"row {self.row}: {better} differs inside {len(self.positions)} positions"
        return f"row {self.row}: {self.status} after {self.seconds:.1f}s (bound {self.lower_bound:.6g})"


def ambiguous_columns(problem: LayerProblem, mask: torch.Tensor, row: int, size: int,
                      span: int | None = None) -> np.ndarray:
    """The `size` decisions of `row` nearest the threshold, in column order: where the row is one budget
    group, the weakest kept and strongest pruned entries by w_j^2 G_jj (half each where the row has
    enough of both); with groups of `span` columns (N:M), whole groups, those of smallest margin between
    their weakest kept and strongest pruned entry."""
    w = problem.W[row].detach().double().cpu()
    score = (w ** 2 * problem.G.diagonal().detach().double().cpu()).numpy()
    keep = mask[row].cpu().numpy().astype(bool)
    size = min(size, len(keep))
    if span is not None and span < len(keep):
        return ambiguous_groups(score, keep, span, size)
    kept, pruned = np.nonzero(keep)[0], np.nonzero(~keep)[0]
    kept = kept[np.argsort(score[kept], kind="stable")]               # weakest first
    pruned = pruned[np.argsort(-score[pruned], kind="stable")]        # strongest first
    n_pruned = min(len(pruned), max(size - len(kept), size // 2))
    return np.sort(np.concatenate([kept[:size - n_pruned], pruned[:n_pruned]]))


def ambiguous_groups(score: np.ndarray, keep: np.ndarray, span: int, size: int) -> np.ndarray:
    """The columns of the max(1, size // span) groups of smallest margin min(kept score) - max(pruned
    score) (groups with nothing to swap last)."""
    S, K = score.reshape(-1, span), keep.reshape(-1, span)
    margin = np.where(K, S, np.inf).min(1) - np.where(~K, S, -np.inf).max(1)
    margin = np.where(np.isfinite(margin), margin, np.inf)
    chosen = np.sort(np.argsort(margin, kind="stable")[:max(1, size // span)])
    return (chosen[:, None] * span + np.arange(span)[None]).ravel()


def neighbourhood_certificate(problem: LayerProblem, pattern: Pattern, mask: torch.Tensor, row: int, size: int,
                              exact: str = "auto", time_limit: float = 10.0) -> NeighbourhoodCertificate:
    """Solve row `row`'s `size` most ambiguous decisions exactly, the rest of the mask fixed (`exact`:
    'auto' is `bnb-qcr` where swaps inside a row's groups keep the pattern (per-row, unstructured, N:M),
    else `oa-qcr`)."""
    t0 = time.perf_counter()
    method = resolve_exact(exact, pattern, problem.shape[1])
    span = pattern.swap_span(problem.shape[1])
    window = ambiguous_columns(problem, mask, row, size, span)
    if method == "bnb-qcr":
        return bnb_certificate(problem, mask, row, window, window // span, time_limit, t0)
    block = build_subblock(problem, pattern, mask, rows=[row], window=window)
    start = block.keep_units(mask)
    res = certify_block(block, method, start, time_limit=time_limit)
    value = block_value(block, start, method)
    better = res.mask is not None and improves(res.objective, value)
    return NeighbourhoodCertificate(row, window.tolist(), value, min(res.objective, value), res.lower_bound,
                                    res.status, time.perf_counter() - t0,
                                    block.layer_mask(res.mask) if better else None)


def improves(found: float, value: float) -> bool:
    """Whether a window's optimum beats the mask's value by more than rounding (rel. 1e-7)."""
    return found < value - 1e-7 * max(abs(value), 1e-30)


def resolve_exact(exact: str, pattern: Pattern, cols: int) -> str:
    """'auto' -> 'bnb-qcr' when swapping a kept and a pruned entry inside a run of columns keeps the pattern
    (per-row and unstructured: the row; N:M: a group), else 'oa-qcr'; 'bnb-qcr' asked for elsewhere is
    refused with one line."""
    local = pattern.swap_span(cols) is not None
    if exact == "auto":
        return "bnb-qcr" if local else "oa-qcr"
    if exact == "bnb-qcr" and not local:
        raise ValueError(f"bnb-qcr frees decisions within budget groups of a row's columns; {pattern.name} has "
                         "none: use oa-qcr")
    return exact


def bnb_certificate(problem: LayerProblem, mask: torch.Tensor, row: int, window: np.ndarray, labels: np.ndarray,
                    time_limit: float, t0: float) -> NeighbourhoodCertificate:
    """The window solved by `qcr_branch_and_bound` (mask only; each budget group of the window, by its
    decisions' group `labels`, keeps its kept count), as a certificate on the row's error."""
    Q, c, const, start = row_window_quadratic(problem, mask, row, window)
    sol = qcr_branch_and_bound(Q, c, window_groups(labels, start), start, const, time_limit)
    value = float(start @ Q @ start + c @ start) + const
    improved = None
    if improves(sol.value, value):
        improved = mask.clone()
        improved[row, torch.as_tensor(window, device=mask.device)] = torch.as_tensor(sol.keep, device=mask.device)
    return NeighbourhoodCertificate(row, window.tolist(), value, min(sol.value, value), sol.lower_bound,
                                    sol.status, time.perf_counter() - t0, improved)


def certify_rows(problem: LayerProblem, pattern: Pattern, mask: torch.Tensor, rows, time_budget: float = 10.0,
                 start_size: int = 16, exact: str = "auto") -> list[NeighbourhoodCertificate]:
    """For each row, the largest neighbourhood (doubling from `start_size`) whose solve finished inside the
    row's `time_budget` seconds.  A better mask found in a window is taken at once and the next, larger
    window is solved around it, so a row's certificate can hold both an improvement and the neighbourhood
    in which the improved mask is proven best; improvements carry over to the next rows."""
    mask, out = mask.clone(), []
    for row in rows:
        t0, size, last, first, changed = time.perf_counter(), min(start_size, problem.shape[1]), None, None, False
        while size <= problem.shape[1] and (left := time_budget - (time.perf_counter() - t0)) > 0:
            cert = neighbourhood_certificate(problem, pattern, mask, row, size, exact, left)
            if cert.status != "optimal":
                break
            last, first = cert, cert.value if first is None else first
            if cert.improved_mask is not None:
                mask, changed = cert.improved_mask, True
            if size == problem.shape[1]:
                break
            size = min(2 * size, problem.shape[1])
        if last is not None:
            out.append(replace(last, improved_mask=mask.clone() if changed else None,
                               start_value=first if changed else None))
    return out
