"""The pricing pass over the dense model (OWL's outlier ratios and every layer's menu, priced), and the two
measures that turn a layer error into units of the loss: the output Fisher and the measured loss rise."""
from __future__ import annotations

from dataclasses import asdict
from functools import partial

import torch

from ..engine import Engine
from ..patterns import Pattern
from ..pruner import layer_problem
from ..solvers.baselines import wanda_scores
from .menus import layer_costs, pruned_count, unit_parameters
from .owl import outlier_ratio


@torch.no_grad()
def survey(net, adapter, windows: torch.Tensor, pattern, menu, method: str, device, batch: int = 8,
           units=None, keep_target: bool = False, progress=None) -> dict:
    """One pass over the dense model: every block's OWL outlier ratio (from its Wanda scores) and, with a
    menu, the priced options: every target layer's pruned weights and cost at each menu sparsity, or with
    `units` (a BlockPruner of the structured pattern; `menu` then maps a unit's uniform share to its menu)
    every structured unit's removed parameters and cost at each share of its menu (`counters`: each layer's
    pruned count as a function of its sparsity; with `keep_target`, `at_target`: each layer's weights pruned
    at the run's sparsity, for `loss_increases`); `progress()` after each block."""
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
    found["counters"] = [partial(pruned_count, Pattern(**pattern), tuple(shape), params)
                         for pattern, shape, params in found["count_args"]]
    return found


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
