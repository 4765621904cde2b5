"""What every layer solver returns, and the method registry."""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..patterns import Pattern, PatternError
from ..problem import LayerProblem
from ..result import PruneResult


METHODS: dict[str, Callable[..., PruneResult]] = {}
PATTERNS_HANDLED: dict[str, tuple[Callable[[Pattern], bool], str]] = {}


def register(name: str, accepts: Callable[[Pattern], bool] = lambda pattern: True, handles: str = "every"):
    """Add a method; `accepts(pattern)` says which patterns it can produce (`handles` in words)."""
    def wrap(fn):
        METHODS[name] = fn
        PATTERNS_HANDLED[name] = (accepts, handles)
        return fn
    return wrap


def check_method(method: str, pattern: Pattern | None = None) -> None:
    """One line for an unknown method or a pattern the method cannot produce, before any work."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    accepts, handles = PATTERNS_HANDLED[method]
    if pattern is not None and not accepts(pattern):
        raise PatternError(f"{method} handles {handles} patterns, not {pattern.name}")


def prune_layer(problem: LayerProblem, pattern: Pattern, method: str, **options) -> PruneResult:
    """Run one method on one layer problem; checks the mask and fills objective/time.  A pattern
    that prunes nothing (sparsity 0) leaves W exactly as it is, whatever the method.  A dense-target
    problem is handed to the method as its symmetric equivalent (W*, G) (`LayerProblem` doc); the
    objective is the dense-target one."""
    check_method(method, pattern)
    problem.check_pattern(pattern)
    t0 = time.perf_counter()
    if pattern.pruned_total(*problem.shape) == 0:
        result = PruneResult(torch.ones_like(problem.W, dtype=torch.bool), problem.W.clone(), method)
    else:
        result = METHODS[method](problem.symmetric_equivalent(), pattern, **options)
    if problem.device.type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - t0
    pattern.check(result.mask)
    result.weight = result.weight * result.mask
    result.objective = problem.objective(W_hat=result.weight)
    return result
