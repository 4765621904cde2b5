"""OWL's outlier-weighted block sparsities (luuyin/OWL).

OWL (luuyin/OWL) scores each block by its outlier ratio D_b, the share of the block's Wanda scores
|W_ij| ||X_j|| above m times their mean (m = 5), and gives block b the sparsity

    s_b = S - (a_b - mean_b a_b),   a_b = 2 lam (D_b - min D) / (max D - min D)   (lam = 0.08),

so every s_b lies in [S - lam, S + lam], blocks with more outliers are pruned less, and the mean is S
(the parameter budget when blocks are equal in size).  The exact alternative is
`formulations.allocation` (a multiple-choice knapsack over the menus of `menus`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..adapters import parameter_matched_split


def outlier_ratio(scores, m: float = 5.0) -> float:
    """D = share of all entries of `scores` (one block's Wanda scores) above m times their mean.  `scores`: a
    list, or a function giving them one at a time (called twice: for the mean, then for the count), so that
    one layer's scores are held at a time (an 8B block's would take 0.8 GiB together)."""
    each = scores if callable(scores) else (lambda: iter(scores))
    total, count = 0.0, 0
    for s in each():
        total, count = total + float(s.detach().sum(dtype=torch.float64)), count + s.numel()
    mean = total / count
    above = sum(int((s.detach().float() > m * mean).count_nonzero()) for s in each())
    return above / count


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


def owl_allocation(net, adapter, found: dict, pattern) -> dict:
    """OWL's block sparsities, given to every linear of the block (structured: split over the block's MLP
    channels and KV groups so that the block loses that share of its parameters)."""
    per_block = owl_sparsities(found["ratios"], pattern.sparsity)
    if not pattern.removes_inputs:
        return {name: float(per_block[b]) for name, b in zip(found["names"], found["block"])}
    sparsity = {}
    for b, block in enumerate(adapter.blocks(net)):
        mlp_sp, attn_sp = parameter_matched_split(block, adapter, float(per_block[b]))
        sparsity[f"{b}.{adapter.mlp.output}"] = mlp_sp
        if adapter.attention is not None:
            sparsity[f"{b}.{adapter.attention.o}"] = attn_sp
    return sparsity
