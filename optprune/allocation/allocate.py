"""allocate(): the pricing pass (or its cached copy), then OWL's rule or the MILP's choice."""
from __future__ import annotations

import time
from functools import partial

import torch

from ..config import resolve_device
from ..engine import model_digest
from ..pruner import BlockPruner
from .cache import cached_survey, pricing_key
from .choice import achieved_sparsity, check_group_bounds, milp_choice
from .menus import cost_method, sparsity_menu, unit_menu
from .owl import owl_allocation
from .pricing import survey


def allocate(net, adapter, windows: torch.Tensor, config, progress=None, model: dict | None = None) -> dict:
    """{'sparsity': {'<block>.<linear>': s}, and the allocation's report} for config.allocation; under the
    structured pattern the keys are each block's MLP output and attention output (the shares of MLP
    channels and KV groups, `BlockPruner.layer_patterns`).  Priced on the first config.allocation_windows
    windows (0: all): the pricing pass prunes every layer at every menu sparsity, so a subset keeps it cheap.
    `progress()` after each block of the pricing pass.  With a config.pricing_cache folder, the pricing pass is
    kept there under `pricing_key` and reused by every run with the same key; never for the loss cost, which
    also needs each layer's pruned weights."""
    check_group_bounds(adapter, config.allocation_bounds)
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
                          lambda: pricing_key(model or model_digest(net), windows, config, method, menu_args),
                          lambda: survey(net, adapter, windows, pattern, menu, method, resolve_device(config.device),
                                         config.batch, units, keep_target=loss, progress=progress))
    report = dict(kind=config.allocation, outlier_ratios=found["ratios"], pricing_cached=found.get("cached"),
                  survey_seconds=time.perf_counter() - t0)
    if config.allocation == "owl":
        sparsity = owl_allocation(net, adapter, found, pattern)
    else:
        sparsity, chosen = milp_choice(net, adapter, windows, config, found, pattern)
        report.update(chosen, cost_method=method)
    report.update(sparsity=sparsity, achieved_sparsity=achieved_sparsity(net, adapter, pattern, sparsity, units),
                  seconds=time.perf_counter() - t0)
    return report
