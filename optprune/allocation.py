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


COST_METHODS = ("magnitude", "wanda", "sparsegpt")     # cheap enough to run at every menu sparsity


def cost_method(method: str) -> str:
    """The method whose layer errors price the menu: the method itself when it is cheap (data-free or
    one OBS pass), else SparseGPT (ADMM, SparseSwaps, mAIHT and SparseFW would run once per option)."""
    return method if method in COST_METHODS else "sparsegpt"


def layer_costs(problem, pattern, menu: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(pruned weights, relative error) of `problem` at every menu sparsity, pruned by `method`."""
    from dataclasses import replace

    from .solvers import prune_layer

    rows, cols = problem.shape
    pruned, costs = np.zeros(len(menu), dtype=np.int64), np.zeros(len(menu))
    for k, s in enumerate(menu):
        p = replace(pattern, sparsity=float(s))
        pruned[k] = p.pruned_total(rows, cols)
        costs[k] = problem.relative_error(W_hat=prune_layer(problem, p, method).weight) if pruned[k] else 0.0
    return pruned, costs


def milp_allocation(names: list[str], pruned: np.ndarray, costs: np.ndarray, uniform_pruned: int,
                    time_limit: float = 60.0):
    """The proven-optimal menu choice with exactly the uniform allocation's pruned count."""
    from .formulations.allocation import Allocation, solve_allocation

    return solve_allocation(Allocation(names, pruned, costs, uniform_pruned), time_limit)


@torch.no_grad()
def survey(net, adapter, windows: torch.Tensor, pattern, menu: np.ndarray | None, method: str, device,
           batch: int = 8) -> dict:
    """One pass over the dense model: every target layer's size and (with a menu) its cost at each menu
    sparsity, and every block's OWL outlier ratio (from its Wanda scores)."""
    from .engine import Engine
    from .pruner import layer_problem
    from .solvers.baselines import wanda_scores

    out = dict(names=[], block=[], pruned=[], costs=[], ratios=[], energy=[])

    def visit(b, block, grams):
        scores = []
        for name, lin in adapter.targets(block).items():
            problem = layer_problem(lin.weight.detach().float(), grams[name], f"{b}.{name}")
            scores.append(wanda_scores(problem))
            out["names"].append(f"{b}.{name}")
            out["block"].append(b)
            out["energy"].append(problem.dense_energy())
            if menu is not None:
                pruned, costs = layer_costs(problem, pattern, menu, method)
                out["pruned"].append(pruned)
                out["costs"].append(costs)
        out["ratios"].append(outlier_ratio(scores))
    Engine(net, adapter, device, batch, offload=False).each_dense_block(windows, visit)
    return out


def allocate(net, adapter, windows: torch.Tensor, config) -> dict:
    """{'sparsity': {'<block>.<linear>': s}, and the allocation's report} for config.allocation."""
    import time
    from dataclasses import replace

    from .config import resolve_device

    t0 = time.perf_counter()
    pattern = config.parsed_pattern()
    menu = (sparsity_menu(pattern.sparsity, config.allocation_spread, config.allocation_step, config.allocation_max)
            if config.allocation == "milp" else None)
    found = survey(net, adapter, windows, pattern, menu, cost_method(config.method), resolve_device(config.device),
                   config.batch)
    targets = {f"{b}.{n}": lin for b, block in enumerate(adapter.blocks(net)) for n, lin in adapter.targets(block).items()}
    shape = {name: (lin.out_features, lin.in_features) for name, lin in targets.items()}
    report = dict(kind=config.allocation, outlier_ratios=found["ratios"])
    if config.allocation == "owl":
        per_block = owl_sparsities(found["ratios"], pattern.sparsity)
        sparsity = {name: float(per_block[b]) for name, b in zip(found["names"], found["block"])}
    else:
        uniform = sum(pattern.pruned_total(*shape[n]) for n in found["names"])
        costs = np.array(found["costs"])
        if config.allocation_cost == "sensitivity":
            fisher = output_fisher(net, adapter, windows, resolve_device(config.device))
            weight = np.array([fisher[n] * e for n, e in zip(found["names"], found["energy"])])
            costs = costs * weight[:, None] / weight.mean()
            report["sensitivity"] = dict(zip(found["names"], (weight / weight.mean()).tolist()))
        res = milp_allocation(found["names"], np.array(found["pruned"]), costs, uniform)
        sparsity = {name: float(menu[k]) for name, k in zip(found["names"], res.choice)}
        report.update(menu=menu.tolist(), cost_method=cost_method(config.method),
                      milp=dict(status=res.status, objective=res.objective, bound=res.bound, seconds=res.seconds),
                      cost=config.allocation_cost,
                      uniform_cost=float(costs[:, list(menu.round(10)).index(round(pattern.sparsity, 10))].sum()))
    pruned = sum(replace(pattern, sparsity=sparsity[n]).pruned_total(*shape[n]) for n in found["names"])
    report.update(sparsity=sparsity, achieved_sparsity=pruned / sum(r * c for r, c in shape.values()),
                  seconds=time.perf_counter() - t0)
    return report


def output_fisher(net, adapter, windows: torch.Tensor, device, max_windows: int = 8) -> dict[str, float]:
    """{'<block>.<linear>': mean_j E[(dL/dy_j)^2]}: the diagonal Fisher of the calibration loss on each target
    layer's outputs, from forward and backward passes over the first `max_windows` windows.  A layer whose
    output error dY spreads evenly over its outputs changes the loss by about 1/2 mean(F) ||dY||^2, so
    relative error x ||Y||^2 x mean(F) prices a layer's pruning in units of the loss."""
    sums, hooks = {}, []
    for b, block in enumerate(adapter.blocks(net)):
        for name, lin in adapter.targets(block).items():
            key = f"{b}.{name}"

            def grab(_m, _i, out, key=key):
                out.register_hook(lambda g, key=key: sums.__setitem__(
                    key, sums.get(key, 0.0) + float(g.float().pow(2).mean(-1).sum())))
            hooks.append(lin.register_forward_hook(grab))
    net.to(device)
    tokens = 0
    try:
        with torch.enable_grad():
            for w in windows[:max_windows]:
                ids = w[None].to(device)
                net(ids, labels=ids).loss.backward()
                tokens += ids.numel()
    finally:
        for h in hooks:
            h.remove()
        net.zero_grad(set_to_none=True)
    return {k: v / tokens for k, v in sums.items()}
