"""Score-based baselines: magnitude |W_ij| and Wanda |W_ij| * ||X_j|| (||X_j|| = sqrt(G_jj))."""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from .base import PruneResult, register


def wanda_scores(problem: LayerProblem) -> torch.Tensor:
    return problem.W.abs() * problem.G.diagonal().clamp_min(0).sqrt()[None, :]


def _from_scores(problem, pattern, scores, name) -> PruneResult:
    mask = pattern.project(scores)
    return PruneResult(mask, problem.W * mask, name)


def magnitude_mask(W: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Keep the largest |W_ij| (ties broken by index): needs no calibration data."""
    return pattern.project(W.abs())


DATA_FREE_MASKS = {"magnitude": magnitude_mask}     # methods whose mask depends on W alone


@register("magnitude")
def magnitude(problem: LayerProblem, pattern: Pattern) -> PruneResult:
    mask = magnitude_mask(problem.W, pattern)
    return PruneResult(mask, problem.W * mask, "magnitude")


@register("wanda")
def wanda(problem: LayerProblem, pattern: Pattern) -> PruneResult:
    return _from_scores(problem, pattern, wanda_scores(problem), "wanda")
