"""The pricing pass over the dense model (OWL's outlier ratios and every layer's menu, priced), and the two
measures that turn a layer error into units of the loss: the output Fisher and the measured loss rise."""
from __future__ import annotations

from dataclasses import asdict
from functools import partial

import torch
import torch.nn.functional as F

from ..engine import Engine, call_block, head_nll, replay_head
from ..engine.evaluate import HEAD_TOKENS
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
        targets = adapter.targets(block)

        def problem(name):                 # made when needed: one layer's float32 copy held at a time
            return layer_problem(targets[name].weight.detach().float(), grams[name], f"{b}.{name}")
        out["ratios"].append(outlier_ratio(lambda: (wanda_scores(problem(name)) for name in targets)))
        if units is None:
            for name in targets:
                record(b, name, problem(name), pattern)
        else:
            for name, unit_pattern in units.layer_patterns(block)[1].items():
                record(b, name, problem(name), unit_pattern, unit_parameters(block, adapter, name))
        if progress is not None:
            progress()
    Engine(net, adapter, device, batch).each_dense_block(windows, visit)
    return with_counters(out)


def with_counters(found: dict) -> dict:
    """The survey with `counters`: each layer's pruned count as a function of its sparsity (`pruned_count`)."""
    found["counters"] = [partial(pruned_count, Pattern(**pattern), tuple(shape), params)
                         for pattern, shape, params in found["count_args"]]
    return found


@torch.no_grad()
def loss_increases(net, adapter, windows: torch.Tensor, pruned: dict, device, max_windows: int = 2,
                   batch: int = 8) -> dict:
    """{'<block>.<linear>': L(that linear alone pruned) - L(dense)}: the calibration loss (mean token NLL over
    the first `max_windows` windows, the same tokens for every layer) with one layer's weights replaced by
    `pruned[name]`, each restored before the next.  One block on the device at a time: the dense stream walks
    the blocks once; at block b each of its pruned layers forks a stream, and the forks of b walk the later
    blocks together (each block moved once per earlier block, not once per layer)."""
    engine = Engine(net, adapter, device, batch)
    ids = windows[:max_windows]
    calls = engine.capture(ids, shard=False)
    blocks, hidden, rise = adapter.blocks(net), calls.inputs.data, {}
    for b in range(len(blocks)):
        for _, block in engine.on_device(order=[b]):
            keys = [k for k in pruned if int(k.split(".", 1)[0]) == b]
            forks = {k: _with_weight(adapter.targets(block)[k.split(".", 1)[1]], pruned[k],
                                     lambda: engine.forward_block(block, b, calls, hidden)) for k in keys}
            hidden = engine.forward_block(block, b, calls, hidden)
        for c, later in engine.on_device(order=range(b + 1, len(blocks)) if forks else ()):
            forks = {k: engine.forward_block(later, c, calls, x) for k, x in forks.items()}
        rise.update({k: head_loss(engine, ids, x) for k, x in forks.items()})
    dense = head_loss(engine, ids, hidden)
    calls.inputs.release()
    return {k: v - dense for k, v in rise.items()}


def _with_weight(lin, weight: torch.Tensor, run):
    """run() with `lin`'s weight replaced by `weight`, restored after."""
    kept = lin.weight.data.clone()
    try:
        lin.weight.data.copy_(weight.to(lin.weight))
        return run()
    finally:
        lin.weight.data.copy_(kept)


def head_loss(engine, ids: torch.Tensor, last: torch.Tensor) -> float:
    """Mean next-token NLL of the windows `ids` given the last block's outputs `last` (the model's own head, a
    few hundred positions at a time: `head_nll`)."""
    ids = ids.to(engine.device)
    return sum(head_nll(engine.net, engine.adapter, ids[i:i + 1], last[i:i + 1]) for i in range(len(ids))) / len(ids)


def output_fisher(net, adapter, windows: torch.Tensor, device, max_windows: int = 8,
                  batch: int = 8) -> dict[str, float]:
    """{'<block>.<linear>': mean_j E[(dL/dy_j)^2]}: the diagonal Fisher of the calibration loss on each target
    layer's outputs, from forward and backward passes over the first `max_windows` windows.  A layer whose
    output error dY spreads evenly over its outputs changes the loss by about 1/2 mean(F) ||dY||^2, so
    relative error x ||Y||^2 x mean(F) prices a layer's pruning in units of the loss.  One block on the
    device at a time: per window, a forward walk keeps every block's input on the host, then a backward walk
    (last block first) recomputes each block from its input and carries dL/d(input) down."""
    engine = Engine(net, adapter, device, batch)
    blocks, sums, tokens = adapter.blocks(net), {}, 0
    calls = engine.capture(windows[:max_windows], shard=False)
    try:
        for i, w in enumerate(windows[:max_windows]):
            inputs = [calls.inputs.data[i:i + 1]]
            for b, block in engine.on_device():
                inputs.append(engine.forward_block(block, b, calls, inputs[-1]))
            grad = _head_gradient(engine, w[None], inputs.pop())
            for b, block in engine.on_device(order=range(len(blocks) - 1, -1, -1)):
                grad = _block_backward(engine, adapter, block, b, calls, inputs[b], grad, sums)
            tokens += w.numel()
    finally:
        calls.inputs.release()
    return {k: v / tokens for k, v in sums.items()}


def _head_gradient(engine, ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """dL/d(last block's output) of the window's mean token NLL, the head run HEAD_TOKENS positions at a time
    (each slice's logits and their gradient only: bounded memory for a 262k vocabulary)."""
    ids, n = ids.to(engine.device), ids.shape[1] - 1
    grad = torch.zeros_like(last, device=engine.device)
    with torch.enable_grad():
        for s in range(0, n, HEAD_TOKENS):
            e = min(s + HEAD_TOKENS, n)
            h = last[:, s:e].to(engine.device).requires_grad_()
            logits = replay_head(engine.net, engine.adapter, ids[:, s:e], h).float()
            loss = F.cross_entropy(logits[0], ids[0, s + 1:e + 1], reduction="sum") / n
            grad[:, s:e] = torch.autograd.grad(loss, h)[0]
    return grad


def _block_backward(engine, adapter, block, b: int, calls, x: torch.Tensor, grad_out: torch.Tensor,
                    sums: dict) -> torch.Tensor:
    """dL/dx of block b given dL/d(its output), adding each target linear's sum over tokens of
    mean_j (dL/dy_j)^2 into sums['<b>.<linear>']."""
    hooks = []
    for name, lin in adapter.targets(block).items():
        def grab(_m, _i, out, key=f"{b}.{name}"):
            out.register_hook(lambda g: sums.__setitem__(key, sums.get(key, 0.0) +
                                                         float(g.float().pow(2).mean(-1).sum())))
        hooks.append(lin.register_forward_hook(grab))
    try:
        with torch.enable_grad():
            x = x.to(engine.device).requires_grad_()
            y = call_block(block, x, calls.args[b], calls.kwargs[b])
            return torch.autograd.grad(y, x, grad_out.to(y))[0]
    finally:
        for h in hooks:
            h.remove()
