"""The pricing pass kept on disk: one survey per key of what it depends on, shared by every run of that key."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..engine import windows_digest
from ..engine.state import atomic_write
from ..parallel import world
from .pricing import with_counters


def pricing_key(model: dict, priced: torch.Tensor, config, method: str, menu_args: tuple) -> dict:
    """What the pricing pass depends on, and nothing else: the model (its digest, `engine.model_digest`), the
    priced windows, the pattern and
    menu, the pricing method (with its options when it is the run's own), dtype, device, batch and ranks.
    Runs that differ only after the choice (reconstruction, dense target, refit, sequential solves, windows
    beyond the priced ones, the MILP's cost and bounds) share one pass."""
    settings = config.result_settings()
    shared = {k: settings[k] for k in ("optprune", "pattern", "sparsity", "attn_sparsity", "dtype", "device", "batch")}
    return dict(shared, **model, windows=windows_digest(priced), menu=list(menu_args), method=method,
                method_options=dict(config.method_options) if method == config.method else {}, ranks=world()[1])


def cached_survey(folder, key, compute) -> dict:
    """compute()'s survey, kept in `folder` (None: not kept) as survey-<sha256 of key()>.json and read back by
    any run of the same key (`pricing_key`): a MILP priced by error and one priced by sensitivity, or a run
    with block reconstruction and one without, share one pricing pass."""
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
