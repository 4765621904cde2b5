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
def survey(net, adapter, windows: torch.Tensor, pattern, menu, method: str, device, batch: int = 8,
           units=None) -> dict:
    """One pass over the dense model: every block's OWL outlier ratio (from its Wanda scores) and, with a
    menu, the priced options: every target layer's pruned weights and cost at each menu sparsity, or with
    `units` (a BlockPruner of the structured pattern; `menu` then maps a unit's uniform share to its menu)
    every structured unit's removed parameters and cost at each share of its menu."""
    from .engine import Engine
    from .pruner import layer_problem
    from .solvers.baselines import wanda_scores

    out = dict(names=[], block=[], pruned=[], costs=[], ratios=[], energy=[], menus=[])

    def record(b, name, problem, unit_pattern, params=None):
        out["names"].append(f"{b}.{name}")
        out["block"].append(b)
        out["energy"].append(problem.dense_energy())
        if menu is None:
            return
        options = menu(unit_pattern.sparsity) if units is not None else menu
        pruned, costs = layer_costs(problem, unit_pattern, options, method)
        if params is not None:                        # removed columns -> removed parameters of the unit
            pruned = np.round(pruned / (problem.shape[0] * problem.shape[1]) * params).astype(np.int64)
        out["pruned"].append(pruned)
        out["costs"].append(costs)
        out["menus"].append(options)

    def visit(b, block, grams):
        problems = {name: layer_problem(lin.weight.detach().float(), grams[name], f"{b}.{name}")
                    for name, lin in adapter.targets(block).items()}
        out["ratios"].append(outlier_ratio([wanda_scores(p) for p in problems.values()]))
        if units is None:
            for name, problem in problems.items():
                record(b, name, problem, pattern)
            return
        for name, unit_pattern in units.layer_patterns(block)[1].items():
            record(b, name, problems[name], unit_pattern, unit_parameters(block, adapter, name))
    Engine(net, adapter, device, batch, offload=False).each_dense_block(windows, visit)
    return out


def allocate(net, adapter, windows: torch.Tensor, config) -> dict:
    """{'sparsity': {'<block>.<linear>': s}, and the allocation's report} for config.allocation; under the
    structured pattern the keys are each block's MLP output and attention output (the shares of MLP
    channels and KV groups, `BlockPruner.layer_patterns`)."""
    import time
    from functools import partial

    from .config import resolve_device
    from .pruner import BlockPruner

    t0 = time.perf_counter()
    pattern = config.parsed_pattern()
    units = BlockPruner(adapter, config.method, pattern, attn_sparsity=config.attn_sparsity) \
        if pattern.removes_inputs else None
    menu_args = (config.allocation_spread, config.allocation_step, config.allocation_max)
    menu = None if config.allocation != "milp" else (partial(unit_menu, spread=menu_args[0], step=menu_args[1],
                                                             top=menu_args[2]) if units is not None
                                                     else sparsity_menu(pattern.sparsity, *menu_args))
    found = survey(net, adapter, windows, pattern, menu, cost_method(config.method, units is not None),
                   resolve_device(config.device), config.batch, units)
    report = dict(kind=config.allocation, outlier_ratios=found["ratios"])
    if config.allocation == "owl":
        sparsity = owl_allocation(net, adapter, found, pattern)
    else:
        sparsity, chosen = milp_choice(net, adapter, windows, config, found, pattern)
        report.update(chosen, cost_method=cost_method(config.method, units is not None))
    report.update(sparsity=sparsity, achieved_sparsity=achieved_sparsity(net, adapter, pattern, sparsity, units),
                  seconds=time.perf_counter() - t0)
    return report


def owl_allocation(net, adapter, found: dict, pattern) -> dict:
    """OWL's block sparsities, given to every linear of the block (structured: split over the block's MLP
    channels and KV groups so that the block loses that share of its parameters)."""
    from .adapters import parameter_matched_split

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


def milp_choice(net, adapter, windows, config, found: dict, pattern) -> tuple[dict, dict]:
    """The MILP's menu choice (module doc of formulations.allocation) with the uniform allocation's pruned
    count as the exact budget; costs optionally weighted by the loss sensitivity of each layer's output."""
    from .config import resolve_device

    menus, pruned, costs = np.array(found["menus"]), np.array(found["pruned"]), np.array(found["costs"])
    uniform = [int(np.argmin(np.abs(m - m[len(m) // 2]))) if pattern.removes_inputs
               else list(m.round(10)).index(round(pattern.sparsity, 10)) for m in menus]
    rows = np.arange(len(menus))
    report = dict(menu=menus[0].tolist() if not pattern.removes_inputs else menus.tolist(), cost=config.allocation_cost)
    if config.allocation_cost == "sensitivity":
        fisher = output_fisher(net, adapter, windows, resolve_device(config.device))
        weight = np.array([fisher[n] * e for n, e in zip(found["names"], found["energy"])])
        costs = costs * weight[:, None] / weight.mean()
        report["sensitivity"] = dict(zip(found["names"], (weight / weight.mean()).tolist()))
    res = milp_allocation(found["names"], pruned, costs, int(pruned[rows, uniform].sum()))
    report.update(milp=dict(status=res.status, objective=res.objective, bound=res.bound, seconds=res.seconds),
                  uniform_cost=float(costs[rows, uniform].sum()))
    return {name: float(menus[i][k]) for i, (name, k) in enumerate(zip(found["names"], res.choice))}, report


def achieved_sparsity(net, adapter, pattern, sparsity: dict, units=None) -> float:
    """The share of the targets' weights (structured: of the blocks' prunable parameters) an allocation removes."""
    from dataclasses import replace

    removed = total = 0
    for b, block in enumerate(adapter.blocks(net)):
        if units is None:
            for name, lin in adapter.targets(block).items():
                p = replace(pattern, sparsity=sparsity.get(f"{b}.{name}", pattern.sparsity))
                removed += p.pruned_total(lin.out_features, lin.in_features)
                total += lin.weight.numel()
            continue
        shares = replace(units, layer_sparsity=sparsity, _patterns={}).layer_patterns(block, b)[1]
        for name, p in shares.items():
            lin, params = block.get_submodule(name), unit_parameters(block, adapter, name)
            removed += p.pruned_total(lin.out_features, lin.in_features) / lin.weight.numel() * params
            total += params
    return removed / total


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
