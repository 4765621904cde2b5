"""The menus of the allocation MILP: each layer's (or structured unit's) options of sparsity, the weights
each option prunes and its price, the relative layer error of the pruning method run at that sparsity."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..solvers import prune_layer
from ..solvers.sparsegpt import sparsegpt_menu


def sparsity_menu(target: float, spread: float = 0.2, step: float = 0.025, top: float = 0.95) -> np.ndarray:
    """The menu target - spread .. target + spread in steps, clipped to [0, top]."""
    k = int(round(spread / step))
    return np.unique(np.clip(target + step * np.arange(-k, k + 1), 0.0, top).round(10))


COST_METHODS = ("magnitude", "wanda", "sparsegpt")     # cheap enough to run at every menu sparsity


def cost_method(method: str, structured: bool = False) -> str:
    """The method whose layer errors price the menu: the method itself when it is cheap (data-free or
    one OBS pass; every structured method is: magnitude, Wanda, SPAP), else SparseGPT (ADMM,
    SparseSwaps, mAIHT and SparseFW would run once per option)."""
    return method if structured or method in COST_METHODS else "sparsegpt"


def unit_parameters(block, adapter, name: str) -> int:
    """Parameters a structured unit removes with all its columns: the KV groups' q/k/v rows and o
    columns for the attention output `name`, else the MLP channels' input rows and output columns."""
    a = adapter.attention
    names = (a.q, a.k, a.v, a.o) if a is not None and name == a.o else (*adapter.mlp.inputs, adapter.mlp.output)
    return sum(block.get_submodule(n).weight.numel() for n in names)


def unit_menu(share: float, spread: float, step: float, top: float) -> np.ndarray:
    """A structured unit's menu: its uniform share +- spread in steps, clipped to [0, top] (repeats kept, so
    every unit's menu has the same length and the uniform share at its centre)."""
    k = int(round(spread / step))
    return np.clip(share + step * np.arange(-k, k + 1), 0.0, top)


def pruned_count(pattern, shape: tuple[int, int], params: int | None, sparsity: float) -> int:
    """Weights a layer prunes at `sparsity` under `pattern` (a structured unit: the parameters its removed
    columns take with them, `params` in all)."""
    pruned = replace(pattern, sparsity=float(sparsity)).pruned_total(*shape)
    return pruned if params is None else int(np.round(pruned / (shape[0] * shape[1]) * params))


def layer_costs(problem, pattern, menu: np.ndarray, method: str, params: int | None = None,
                keep_target: bool = False) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """(pruned weights, relative error) of `problem` at every menu sparsity, pruned by `method`, and with
    `keep_target` the weights pruned at the pattern's own sparsity (one of the menu's options), else None."""
    pruned = np.array([pruned_count(pattern, problem.shape, params, s) for s in menu], dtype=np.int64)
    costs, at_target = np.zeros(len(menu)), None
    weights = pruned_weights(problem, [replace(pattern, sparsity=float(s)) for s, n in zip(menu, pruned) if n],
                             method)
    for k, (s, n) in enumerate(zip(menu, pruned)):
        weight = weights.pop(0) if n else problem.W
        costs[k] = problem.relative_error(W_hat=weight) if n else 0.0
        if keep_target and round(float(s), 10) == round(pattern.sparsity, 10):
            at_target = weight.to(torch.bfloat16)
    return pruned, costs, at_target


def pruned_weights(problem, patterns: list, method: str) -> list[torch.Tensor]:
    """`problem`'s weights pruned by `method` under each pattern; SparseGPT sweeps them all at once
    (`sparsegpt_menu`, the same weights as one run per pattern)."""
    if method == "sparsegpt" and patterns:
        for pattern in patterns:
            problem.check_pattern(pattern)
        return sparsegpt_menu(problem.symmetric_equivalent(), patterns)
    return [prune_layer(problem, pattern, method).weight for pattern in patterns]
