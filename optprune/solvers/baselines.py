"""Score-based baselines: magnitude |W_ij| and Wanda |W_ij| * ||X_j|| (||X_j|| = sqrt(G_jj))."""
from __future__ import annotations

import torch

from ..patterns import Pattern, select_mask
from ..problem import LayerProblem
from .base import PruneResult, register


def wanda_scores(problem: LayerProblem) -> torch.Tensor:
    return problem.W.abs() * problem.G.diagonal().clamp_min(0).sqrt()[None, :]


def _from_scores(problem, pattern, scores, name) -> PruneResult:
    mask = select_mask(scores, pattern)
    return PruneResult(mask, problem.W * mask, name)


@register("magnitude")
def magnitude(problem: LayerProblem, pattern: Pattern) -> PruneResult:
    return _from_scores(problem, pattern, problem.W.abs(), "magnitude")


@register("wanda")
def wanda(problem: LayerProblem, pattern: Pattern) -> PruneResult:
    return _from_scores(problem, pattern, wanda_scores(problem), "wanda")
