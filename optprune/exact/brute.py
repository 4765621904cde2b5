"""Optima by enumeration, for tiny layers (tests and teaching): every valid keep mask of a pattern, and the
least mask-only or refit error over them.  Exponential: `MAX_DECISIONS` entries enumerated at once at most."""
from __future__ import annotations

from itertools import product

import numpy as np
import torch

from ..patterns import Pattern
from ..problem import LayerProblem

MAX_DECISIONS = 20


def is_valid(pattern: Pattern, mask: torch.Tensor) -> bool:
    try:
        pattern.check(mask)
        return True
    except Exception:  # noqa: BLE001 - not a mask of the pattern
        return False


def all_masks(pattern: Pattern, rows: int, cols: int):
    """Every valid keep mask of a rows x cols layer (rows combined from each row's masks when a row's budget
    is its own)."""
    if pattern.budget_scope == "layer":
        if rows * cols > MAX_DECISIONS:
            raise ValueError(f"enumerating a {rows} x {cols} layer's masks: at most {MAX_DECISIONS} entries")
        bits = (torch.tensor(b).reshape(rows, cols) for b in product([False, True], repeat=rows * cols))
        yield from (m for m in bits if is_valid(pattern, m))
        return
    if cols > MAX_DECISIONS:
        raise ValueError(f"enumerating rows of {cols} entries: at most {MAX_DECISIONS}")
    row_masks = [torch.tensor(b) for b in product([False, True], repeat=cols) if is_valid(pattern, torch.tensor([b]))]
    for choice in product(row_masks, repeat=rows):
        yield torch.stack(choice)


def refit_error(problem: LayerProblem, mask: torch.Tensor) -> float:
    """sum_i min over v supported on row i's kept set of (w_i - v)^T G (w_i - v) (symmetric problems)."""
    W, G = problem.float64()
    total = 0.0
    for i in range(W.shape[0]):
        S = np.nonzero(mask[i].numpy())[0]
        v = np.zeros(W.shape[1])
        if len(S):
            v[S] = np.linalg.solve(G[np.ix_(S, S)], (G @ W[i])[S])
        d = W[i] - v
        total += d @ G @ d
    return float(total)


def layer_optimum(problem: LayerProblem, pattern: Pattern, refit: bool = False) -> float:
    """The least error over every mask of the pattern, mask only or with refit (row by row when each row's
    budget is its own)."""
    rows, cols = problem.shape

    def error(prob, mask):
        return refit_error(prob, mask) if refit else float(prob.objective(mask))

    if pattern.budget_scope == "layer":
        return min(error(problem, m) for m in all_masks(pattern, rows, cols))
    return sum(min(error(LayerProblem(problem.W[i:i + 1], problem.G), m) for m in all_masks(pattern, 1, cols))
               for i in range(rows))
