"""Per-layer sparsities: OWL's outlier-weighted heuristic and the menus of the allocation MILP.

OWL (luuyin/OWL) scores each block by its outlier ratio D_b, the share of the block's Wanda scores
|W_ij| ||X_j|| above m times their mean (m = 5), and gives block b the sparsity

    s_b = S - (a_b - mean_b a_b),   a_b = 2 lam (D_b - min D) / (max D - min D)   (lam = 0.08),

so every s_b lies in [S - lam, S + lam], blocks with more outliers are pruned less, and the mean is S
(the parameter budget when blocks are equal in size).  The exact alternative is
`optprune.formulations.allocation` (a multiple-choice knapsack over menus built here).
"""
from __future__ import annotations

from dataclasses import asdict

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


MIP_REL_GAP = 1e-4          # the allocation MILP's proof tolerance (HiGHS's and Gurobi's default)
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
    from dataclasses import replace

    pruned = replace(pattern, sparsity=float(sparsity)).pruned_total(*shape)
    return pruned if params is None else int(np.round(pruned / (shape[0] * shape[1]) * params))


def layer_costs(problem, pattern, menu: np.ndarray, method: str, params: int | None = None,
                keep_target: bool = False) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """(pruned weights, relative error) of `problem` at every menu sparsity, pruned by `method`, and with
    `keep_target` the weights pruned at the pattern's own sparsity (one of the menu's options), else None."""
    from dataclasses import replace

    from .solvers import prune_layer

    pruned = np.array([pruned_count(pattern, problem.shape, params, s) for s in menu], dtype=np.int64)
    costs, at_target = np.zeros(len(menu)), None
    for k, (s, n) in enumerate(zip(menu, pruned)):
        weight = prune_layer(problem, replace(pattern, sparsity=float(s)), method).weight if n else problem.W
        costs[k] = problem.relative_error(W_hat=weight) if n else 0.0
        if keep_target and round(float(s), 10) == round(pattern.sparsity, 10):
            at_target = weight.to(torch.bfloat16)
    return pruned, costs, at_target


def milp_allocation(names: list[str], pruned: np.ndarray, costs: np.ndarray, uniform: np.ndarray,
                    time_limit: float = 60.0, mip_rel_gap: float = MIP_REL_GAP, groups: list = ()):
    """The menu choice of least cost pruning between the uniform choice's count P and P + one menu step (the
    largest step of any layer; `place_remainder` then returns the surplus), from the uniform choice as the
    first incumbent.  An exact equality on counts of ~10^5 is a number-theoretic puzzle on which HiGHS found
    no choice in 60 s at 70% on SmolLM2; the window is a relaxation of it, so its bound is valid for the
    exact budget too.  Proven within `mip_rel_gap` (HiGHS's default; status and bound reported).  `groups`:
    (members, lo, hi) bounds in weights (`GroupBound.group`)."""
    from .formulations.allocation import Allocation, solve_allocation

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


@torch.no_grad()
def survey(net, adapter, windows: torch.Tensor, pattern, menu, method: str, device, batch: int = 8,
           units=None, keep_target: bool = False, progress=None) -> dict:
    """One pass over the dense model: every block's OWL outlier ratio (from its Wanda scores) and, with a
    menu, the priced options: every target layer's pruned weights and cost at each menu sparsity, or with
    `units` (a BlockPruner of the structured pattern; `menu` then maps a unit's uniform share to its menu)
    every structured unit's removed parameters and cost at each share of its menu (`counters`: each layer's
    pruned count as a function of its sparsity; with `keep_target`, `at_target`: each layer's weights pruned
    at the run's sparsity, for `loss_increases`); `progress()` after each block."""
    from .engine import Engine
    from .pruner import layer_problem
    from .solvers.baselines import wanda_scores

    out = dict(names=[], block=[], pruned=[], costs=[], ratios=[], energy=[], menus=[], count_args=[], at_target={},
               sizes=[])

    def record(b, name, problem, unit_pattern, params=None):
        out["names"].append(f"{b}.{name}")
        out["block"].append(b)
        out["energy"].append(problem.dense_energy())
        out["sizes"].append(params if params is not None else problem.shape[0] * problem.shape[1])
        if menu is None:
            return
        options = menu(unit_pattern.sparsity) if units is not None else menu
        pruned, costs, at_target = layer_costs(problem, unit_pattern, options, method, params, keep_target)
        out["count_args"].append((asdict(unit_pattern), list(problem.shape), params))
        if at_target is not None:
            out["at_target"][f"{b}.{name}"] = at_target
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
        else:
            for name, unit_pattern in units.layer_patterns(block)[1].items():
                record(b, name, problems[name], unit_pattern, unit_parameters(block, adapter, name))
        if progress is not None:
            progress()
    Engine(net, adapter, device, batch, offload=False).each_dense_block(windows, visit)
    return with_counters(out)


def with_counters(found: dict) -> dict:
    """The survey with `counters`: each layer's pruned count as a function of its sparsity (`pruned_count`)."""
    from functools import partial

    from .patterns import Pattern

    found["counters"] = [partial(pruned_count, Pattern(**pattern), tuple(shape), params)
                         for pattern, shape, params in found["count_args"]]
    return found


def pricing_key(net, priced: torch.Tensor, config, method: str, menu_args: tuple) -> dict:
    """What the pricing pass depends on, and nothing else: the model, the priced windows, the pattern and
    menu, the pricing method (with its options when it is the run's own), dtype, device, batch and ranks.
    Runs that differ only after the choice (reconstruction, dense target, refit, sequential solves, windows
    beyond the priced ones, the MILP's cost and bounds) share one pass."""
    from .engine import model_digest, windows_digest
    from .parallel import world

    settings = config.result_settings()
    shared = {k: settings[k] for k in ("optprune", "pattern", "sparsity", "attn_sparsity", "dtype", "device", "batch")}
    return dict(shared, **model_digest(net), windows=windows_digest(priced), menu=list(menu_args), method=method,
                method_options=dict(config.method_options) if method == config.method else {}, ranks=world()[1])


def cached_survey(folder, key, compute) -> dict:
    """compute()'s survey, kept in `folder` (None: not kept) as survey-<sha256 of key()>.json and read back by
    any run of the same key (`pricing_key`): a MILP priced by error and one priced by sensitivity, or a run
    with block reconstruction and one without, share one pricing pass."""
    import hashlib
    import json
    from pathlib import Path

    from .engine.state import atomic_write

    if folder is None:
        return compute()
    digest = hashlib.sha256(json.dumps(key(), sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(folder) / f"survey-{digest}.json"
    if path.exists():
        return with_counters(dict(json.loads(path.read_text()), cached=path.name))
    found = compute()
    kept = {k: np.asarray(v).tolist() if k in ("pruned", "costs", "menus") else v
            for k, v in found.items() if k not in ("counters", "at_target", "cached")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(kept)))
    return found


def allocate(net, adapter, windows: torch.Tensor, config, progress=None) -> dict:
    """{'sparsity': {'<block>.<linear>': s}, and the allocation's report} for config.allocation; under the
    structured pattern the keys are each block's MLP output and attention output (the shares of MLP
    channels and KV groups, `BlockPruner.layer_patterns`).  Priced on the first config.allocation_windows
    windows (0: all): the pricing pass prunes every layer at every menu sparsity, so a subset keeps it cheap.
    `progress()` after each block of the pricing pass.  With a config.pricing_cache folder, the pricing pass is
    kept there under `pricing_key` and reused by every run with the same key; never for the loss cost, which
    also needs each layer's pruned weights."""
    import time
    from functools import partial

    from .config import resolve_device
    from .pruner import BlockPruner

    t0 = time.perf_counter()
    windows = windows[:config.allocation_windows] if config.allocation_windows else windows
    pattern = config.parsed_pattern()
    units = BlockPruner(adapter, config) if pattern.removes_inputs else None
    menu_args = (config.allocation_spread, config.allocation_step, config.allocation_max)
    menu = None if config.allocation != "milp" else (partial(unit_menu, spread=menu_args[0], step=menu_args[1],
                                                             top=menu_args[2]) if units is not None
                                                     else sparsity_menu(pattern.sparsity, *menu_args))
    loss, method = config.allocation_cost == "loss", cost_method(config.method, units is not None)
    found = cached_survey(None if loss else config.pricing_cache or None,
                          lambda: pricing_key(net, windows, config, method, menu_args),
                          lambda: survey(net, adapter, windows, pattern, menu, method, resolve_device(config.device),
                                         config.batch, units, keep_target=loss, progress=progress))
    report = dict(kind=config.allocation, outlier_ratios=found["ratios"], pricing_cached=found.get("cached"))
    if config.allocation == "owl":
        sparsity = owl_allocation(net, adapter, found, pattern)
    else:
        sparsity, chosen = milp_choice(net, adapter, windows, config, found, pattern)
        report.update(chosen, cost_method=method)
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
    """The MILP's menu choice (module doc of formulations.allocation) pruning at least the uniform allocation's
    count P (at most one menu step more), the surplus then returned by `place_remainder`, so the run prunes
    exactly P weights where the pattern's granularity allows (unstructured: always).  Costs: each layer's
    relative error (`error`); times its output energy and Fisher (`sensitivity`); or rescaled so that the
    option at the run's sparsity costs the measured rise of the calibration loss when that layer alone is
    pruned there (`loss`, `loss_increases`).  config.allocation_bounds bound groups of layers (`GroupBound`);
    the report gives each group's achieved sparsity, and `options` every layer's menu, pruned counts and the
    costs the MILP saw (so the choice can be solved again without the pricing pass)."""
    from .config import resolve_device
    from .formulations.allocation import GroupBound

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
    if config.allocation_cost == "loss":
        rise = loss_increases(net, adapter, windows, found["at_target"], resolve_device(config.device))
        measured = np.array([rise[n] for n in found["names"]])
        floor = 1e-3 * max(measured.max(), 1e-12)                 # a rise within noise of zero: still priced
        costs = costs * (np.maximum(measured, floor) / np.maximum(costs[rows, uniform], 1e-12))[:, None]
        report["loss_increase"] = dict(zip(found["names"], measured.tolist()))
    budget = int(pruned[rows, uniform].sum())
    groups = [GroupBound.parse(b).group(found["names"], found["sizes"]) for b in config.allocation_bounds]
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


@torch.no_grad()
def loss_increases(net, adapter, windows: torch.Tensor, pruned: dict, device, max_windows: int = 2) -> dict:
    """{'<block>.<linear>': L(that linear alone pruned) - L(dense)}: the calibration loss (mean token NLL over
    the first `max_windows` windows, the same tokens for every layer) with one layer's weights replaced by
    `pruned[name]`, each restored before the next."""
    net.to(device)
    ids = windows[:max_windows].to(device)
    dense = float(net(ids, labels=ids).loss)
    blocks, rise = adapter.blocks(net), {}
    for key, weight in pruned.items():
        b, name = key.split(".", 1)
        lin = adapter.targets(blocks[int(b)])[name]
        kept = lin.weight.data.clone()
        try:
            lin.weight.data.copy_(weight.to(lin.weight))
            rise[key] = float(net(ids, labels=ids).loss) - dense
        finally:
            lin.weight.data.copy_(kept)
    return rise


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
