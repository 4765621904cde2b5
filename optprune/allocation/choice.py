"""The exact choice: the allocation MILP over the priced menus (`formulations.allocation`), its
remainder placed so the run prunes exactly the uniform count, and the share an allocation removes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..config import resolve_device
from formulations.allocation import Allocation, GroupBound, solve_allocation
from .menus import unit_parameters
from .pricing import loss_increases, output_fisher


MIP_REL_GAP = 1e-4          # the allocation MILP's proof tolerance (HiGHS's and Gurobi's default)
def check_group_bounds(adapter, bounds) -> None:
    """Refuse, before any pricing, an attention or mlp bound on a family whose adapter cannot say which
    layers are attention (`ModelAdapter.is_attention` raises)."""
    if any(GroupBound.parse(b).block_range() is None for b in bounds):
        adapter.is_attention("")


def milp_allocation(names: list[str], pruned: np.ndarray, costs: np.ndarray, uniform: np.ndarray,
                    time_limit: float = 60.0, mip_rel_gap: float = MIP_REL_GAP, groups: list = ()):
    """The menu choice of least cost pruning between the uniform choice's count P and P + one menu step (the
    largest step of any layer; `place_remainder` then returns the surplus), from the uniform choice as the
    first incumbent.  An exact equality on counts of ~10^5 is a number-theoretic puzzle on which HiGHS found
    no choice in 60 s at 70% on SmolLM2; the window is a relaxation of it, so its bound is valid for the
    exact budget too.  Proven within `mip_rel_gap` (HiGHS's default; status and bound reported).  `groups`:
    (members, lo, hi) bounds in weights (`GroupBound.group`)."""
    steps = np.diff(np.sort(pruned, axis=1), axis=1)
    slack = int(steps.max()) if steps.size else 0
    budget = int(pruned[np.arange(len(names)), uniform].sum())
    return solve_allocation(Allocation(names, pruned, costs, budget, slack=slack, groups=list(groups)), time_limit,
                            mip_rel_gap, uniform)


def place_remainder(names: list[str], sparsity: np.ndarray, counters: list, surplus: int, costs: np.ndarray,
                    pruned: np.ndarray, choice: np.ndarray, groups: list = ()) -> tuple[np.ndarray, int, list[str]]:
    """Un-prune `surplus` weights, layer by layer in order of the steepest cost per pruned weight at the chosen
    option (each layer lowered to the least sparsity that still prunes its count minus what is left, found by
    bisection on its pattern's count); returns the sparsities, the surplus left (below every layer's
    granularity: 0 under unstructured) and which layers moved.  With costs non-decreasing in sparsity the
    result costs no more than the menu optimum at the exact budget (interpolating between options).  A layer
    un-prunes no more than its `groups`' lower bounds (members, lo, hi in weights) leave room for."""
    rows = np.arange(len(choice))
    in_group = [np.isin(rows, members) for members, _, _ in groups]
    room = [pruned[rows, choice][inside].sum() - lo for inside, (_, lo, _) in zip(in_group, groups)]
    below = np.maximum(choice - 1, 0)
    slope = (costs[rows, choice] - costs[rows, below]) / np.maximum(pruned[rows, choice] - pruned[rows, below], 1)
    sparsity, moved = sparsity.copy(), []
    for l in np.argsort(-slope, kind="stable"):
        if surplus <= 0:
            break
        count = counters[l]
        have = count(sparsity[l])
        target = have - min([surplus] + [r for r, inside in zip(room, in_group) if inside[l]])
        lo, hi = 0.0, float(sparsity[l])              # smallest s with count(s) >= target
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if count(mid) >= target else (mid, hi)
        if count(hi) < have:
            moved.append(f"{names[l]}: {sparsity[l]:.4f} -> {hi:.6f}")
            surplus -= have - count(hi)
            room = [r - (have - count(hi)) * inside[l] for r, inside in zip(room, in_group)]
            sparsity[l] = hi
    return sparsity, surplus, moved


def milp_choice(net, adapter, windows, config, found: dict, pattern) -> tuple[dict, dict]:
    """The MILP's menu choice (module doc of formulations.allocation) pruning at least the uniform allocation's
    count P (at most one menu step more), the surplus then returned by `place_remainder`, so the run prunes
    exactly P weights where the pattern's granularity allows (unstructured: always).  Costs: each layer's
    relative error (`error`); times its output energy and Fisher (`sensitivity`); or rescaled so that the
    option at the run's sparsity costs the measured rise of the calibration loss when that layer alone is
    pruned there (`loss`, `loss_increases`).  config.allocation_bounds bound groups of layers (`GroupBound`);
    the report gives each group's achieved sparsity, and `options` every layer's menu, pruned counts and the
    costs the MILP saw (so the choice can be solved again without the pricing pass)."""
    menus, pruned, costs = np.array(found["menus"]), np.array(found["pruned"]), np.array(found["costs"])
    uniform = [int(np.argmin(np.abs(m - m[len(m) // 2]))) if pattern.removes_inputs
               else list(m.round(10)).index(round(pattern.sparsity, 10)) for m in menus]
    rows = np.arange(len(menus))
    report = dict(menu=menus[0].tolist() if not pattern.removes_inputs else menus.tolist(), cost=config.allocation_cost)
    if config.allocation_cost == "sensitivity":
        fisher = output_fisher(net, adapter, windows, resolve_device(config.device), batch=config.batch)
        weight = np.array([fisher[n] * e for n, e in zip(found["names"], found["energy"])])
        costs = costs * weight[:, None] / weight.mean()
        report["sensitivity"] = dict(zip(found["names"], (weight / weight.mean()).tolist()))
    if config.allocation_cost == "loss":
        rise = loss_increases(net, adapter, windows, found["at_target"], resolve_device(config.device),
                               batch=config.batch)
        measured = np.array([rise[n] for n in found["names"]])
        floor = 1e-3 * max(measured.max(), 1e-12)                 # a rise within noise of zero: still priced
        costs = costs * (np.maximum(measured, floor) / np.maximum(costs[rows, uniform], 1e-12))[:, None]
        report["loss_increase"] = dict(zip(found["names"], measured.tolist()))
    budget = int(pruned[rows, uniform].sum())
    groups = [GroupBound.parse(b).group(found["names"], found["sizes"], adapter.is_attention)
              for b in config.allocation_bounds]
    res = milp_allocation(found["names"], pruned, costs, np.array(uniform), groups=groups)
    chosen = np.array([menus[i][k] for i, k in enumerate(res.choice)], dtype=float)
    placed, left, moved = place_remainder(found["names"], chosen, found["counters"], res.pruned - budget, costs,
                                          pruned, res.choice, groups)
    report.update(milp=dict(status=res.status, objective=res.objective, bound=res.bound, seconds=res.seconds,
                            mip_rel_gap=MIP_REL_GAP, budget=budget, pruned=res.pruned, remainder_left=left,
                            remainder_moved=moved),
                  uniform_cost=float(costs[rows, uniform].sum()),
                  options={name: dict(sparsity=menus[i].tolist(), pruned=pruned[i].tolist(), cost=costs[i].tolist())
                           for i, name in enumerate(found["names"])})
    if groups:
        counts = np.array([count(sp) for count, sp in zip(found["counters"], placed)])
        sizes = np.asarray(found["sizes"], dtype=float)
        report["groups"] = {spec: float(counts[members].sum() / sizes[members].sum())
                            for spec, (members, _, _) in zip(config.allocation_bounds, groups)}
    return {name: float(s) for name, s in zip(found["names"], placed)}, report


def achieved_sparsity(net, adapter, pattern, sparsity: dict, units=None) -> float:
    """The share of the targets' weights (structured: of the blocks' prunable parameters) an allocation removes."""
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
