"""Per-layer sparsities: OWL's outlier-weighted heuristic and the menus of the allocation MILP.

OWL (luuyin/OWL) scores each block by its outlier ratio D_b, the share of the block's Wanda scores
|W_ij| ||X_j|| above m times their mean (m = 5), and gives block b the sparsity

    s_b = S - (a_b - mean_b a_b),   a_b = 2 lam (D_b - min D) / (max D - min D)   (lam = 0.08),

so every s_b lies in [S - lam, S + lam], blocks with more outliers are pruned less, and the mean is S
(the parameter budget when blocks are equal in size).  The exact alternative is
`optprune.formulations.allocation` (a multiple-choice knapsack over menus built here).
"""
from __future__ import annotations

import numpy as np
import torch


def outlier_ratio(scores: list[torch.Tensor], m: float = 5.0) -> float:
    """D = share of all entries of `scores` (one block's Wanda scores) above m times their mean."""
    flat = torch.cat([s.detach().float().flatten() for s in scores])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios, sparsity: float, lam: float = 0.08) -> np.ndarray:
    """OWL's block sparsities from the blocks' outlier ratios (module doc); uniform when all are equal."""
    D = np.asarray(ratios, dtype=float)
    if not 0 <= sparsity < 1 or not 0 <= lam:
        raise ValueError(f"sparsity must lie in [0, 1) and lam >= 0, got {sparsity}, {lam}")
    spread = D.max() - D.min()
    a = np.zeros_like(D) if spread == 0 else 2 * lam * (D - D.min()) / spread
    s = sparsity - (a - a.mean())
    if s.min() < 0 or s.max() >= 1:
        raise ValueError(f"OWL with lam={lam} leaves [0, 1) at sparsity {sparsity}: lower lam")
    return s


def sparsity_menu(target: float, spread: float = 0.2, step: float = 0.025, top: float = 0.95) -> np.ndarray:
    """The menu target - spread .. target + spread in steps, clipped to [0, top]."""
    k = int(round(spread / step))
    return np.unique(np.clip(target + step * np.arange(-k, k + 1), 0.0, top).round(10))
