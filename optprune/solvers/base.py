"""What every layer solver returns, and the method registry."""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..patterns import Pattern
from ..problem import LayerProblem
from ..result import PruneResult


METHODS: dict[str, Callable[..., PruneResult]] = {}


def register(name: str):
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def prune_layer(problem: LayerProblem, pattern: Pattern, method: str, **options) -> PruneResult:
    """Run one method on one layer problem; checks the mask and fills objective/time."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    problem.check_pattern(pattern)
    t0 = time.perf_counter()
    result = METHODS[method](problem, pattern, **options)
    if problem.device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - t0
    pattern.check(result.mask)
    result.weight = result.weight * result.mask
    result.objective = problem.objective(W_hat=result.weight)
    return result
