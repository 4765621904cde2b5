"""Reconstruction variants refitted block by block on one pruned stream: the held-out block error each leaves.

SmolLM2 (the embedded model), uniform SparseGPT at SPARSITY per-row on 32 calibration windows, the `balanced`
preset's reconstruction; the walk runs the preset itself over the first BLOCKS blocks, and at each block each
variant (step 3e-3, step 4e-3, a fourth epoch with q/k/v frozen) refits a copy of the same pruned block on the
same inputs.  Prints one JSON line per block (each variant's held-out error after, kept epoch, seconds) and
each variant's mean held-out error relative to the preset's.  A block's error is not the walk's perplexity
(docs/objectives.md: step 4e-3 lowered it here at 60% and raised the README job's perplexity 4.5% at 50%).

    python validation/reconstruct_variant_blocks.py SPARSITY BLOCKS      # e.g. 0.6 6 (about 10 min, 2 threads)
"""
from __future__ import annotations

import copy
import json
import sys

import torch

from optprune.adapters import adapter_for
from optprune.api import calibration_for, pruner_for, reconstruction_for
from optprune.checkpoints.model_io import load_model
from optprune.config import PruneConfig
from optprune.engine import Engine, ResumeState
from optprune.recipes import with_recipe

VARIANTS = {"lr3e-3": dict(lr=3e-3), "lr4e-3": dict(lr=4e-3), "ep4qkv3": dict(epochs=4, qkv_epochs=3)}


def comparing(base, rows: list):
    """A reconstruction for the walk: each variant refits a copy of the block, then `base` fits the block itself;
    one row per block ({variant: (held-out error after, kept epoch, seconds)}, and the error before)."""
    def reconstruct(block, inps, outs, args, kwargs, device, carry=None):
        row = {}
        for name, options in VARIANTS.items():
            variant = copy.copy(base)
            variant.__dict__.update(options)
            r = variant(copy.deepcopy(block), inps, outs, args, kwargs, device)
            row[name] = (r["error_after"]["held_out"], r["kept_epoch"], r["seconds"])
        r = base(block, inps, outs, args, kwargs, device, carry)
        row["base"] = (r["error_after"]["held_out"], r["kept_epoch"], r["seconds"])
        row["before"] = r["error_before"]["held_out"]
        rows.append(row)
        print(len(rows) - 1, json.dumps(row), flush=True)
        return r
    return reconstruct


def main(sparsity: float, blocks: int) -> None:
    net, tok = load_model(dtype=torch.bfloat16)[:2]
    adapter = adapter_for(net)
    config = PruneConfig(**with_recipe("balanced", dict(pattern="per-row", sparsity=sparsity, nsamples=32)))
    windows = calibration_for(net, tok, adapter, config)
    rows = []
    engine = Engine(net, adapter, torch.device("cpu"), config.batch,
                    reconstruct=comparing(reconstruction_for(config, adapter), rows),
                    dense_windows=config.reconstruct_windows)
    net.eval()
    with torch.no_grad():
        engine.run(windows, pruner_for(net, config, adapter), ResumeState(None, adapter, False, {}), stop=blocks)
    for name in ["base", *VARIANTS]:
        relative = [r[name][0] / r["base"][0] for r in rows]
        print(name, "mean held-out error relative to base", sum(relative) / len(relative),
              "seconds", sum(r[name][2] for r in rows))


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
