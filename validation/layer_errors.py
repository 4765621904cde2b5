"""Benchmark: per-layer relative error of every method vs Wanda, and seconds per layer.

Real SmolLM2-135M layer problems (shared/data/layers: blocks 0 and 29, all 7 linears).
rel. error = tr(D G D^T) / tr(W G W^T) with each method's own W_hat.
Writes docs/results/layer_errors.md.
Usage: python validation/layer_errors.py [--settings per-row:0.5,2:4] [--blocks 00,29]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from optprune import load_layer_problems, prune_layer
from optprune.parallel import machine_name
from sampled_rows import setting_pattern     # this folder's sibling script

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "wanda", "sparsegpt", "sparsefw", "sparseswaps", "maiht", "wanda+refit", "sparseswaps+refit"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers-dir", default=str(ROOT.parent / "shared" / "data" / "layers"))
    ap.add_argument("--settings", default="per-row:0.5,2:4")
    ap.add_argument("--blocks", default="00,29")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "layer_errors.md"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="a sentence on the run conditions for the table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = Path(args.out).with_suffix(".json")
    done = json.loads(store.read_text()) if store.exists() else {}
    for setting in args.settings.split(","):
        pattern = setting_pattern(setting)
        rows = {}
        for blk in args.blocks.split(","):
            probs = load_layer_problems(Path(args.layers_dir) / f"smollm2-135m_block{blk}.safetensors")
            for name, prob in probs.items():
                rows[f"{blk}.{name}"] = row = {}
                solved = {}                     # "X+refit" refits the mask X found (its time included)
                for m in METHODS:
                    base, _, refit = m.partition("+")
                    if base not in solved:
                        solved[base] = prune_layer(prob, pattern, base)
                    res = solved[base]
                    t0 = time.perf_counter()
                    weight = prob.refit(res.mask, res.weight) if refit else res.weight
                    row[m] = (prob.relative_error(W_hat=weight), res.seconds + (time.perf_counter() - t0) * bool(refit))
                print(blk, name, {m: f"{e:.4g}" for m, (e, _) in row.items()}, flush=True)
        done[setting] = dict(title=f"{pattern.name}, sparsity {pattern.sparsity:.2f}", rows=rows, note=args.note,
                             machine=machine_name())
        store.write_text(json.dumps(done, indent=1))
        Path(args.out).write_text(render(done))
    lines = render(done).splitlines()
    print("\n".join(lines))


def render(done: dict) -> str:
    """One table per setting: error of every method per layer, mean ratio to Wanda, mean seconds."""
    lines = ["# Per-layer relative error on real SmolLM2-135M layers\n",
             "Relative error tr(D G D^T)/tr(W G W^T) with each method's own weights (sparsegpt and maiht update "
             "kept weights; `+refit` adds the per-row least-squares refit of the kept weights; the others are "
             "masks only), float32, default options of each method. Blocks 00 and 29 are shared/data/layers; "
             "block 14 comes from `validation/dump_layer_problems.py` (same protocol). Seconds per layer include "
             "the refit where there is one. Command: `python validation/layer_errors.py --layers-dir runs/layers "
             "--blocks 00,14,29 --settings per-row:0.5,per-row:0.6,per-row:0.7,2:4` (each setting is kept in "
             "layer_errors.json, so settings can be run separately).\n"]
    for setting, res in done.items():
        methods = list(next(iter(res["rows"].values())))
        lines += [f"\n## {res['title']}\n", f"Machine: {res['machine']}. {res['note']}\n",
                  "| layer | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for layer, row in res["rows"].items():
            lines.append(f"| {layer} | " + " | ".join(f"{row[m][0]:.4g}" for m in methods) + " |")
        ratio = {m: np.mean([row[m][0] / row["wanda"][0] for row in res["rows"].values()]) for m in methods}
        secs = {m: np.mean([row[m][1] for row in res["rows"].values()]) for m in methods}
        lines.append("| **mean error / Wanda's** | " + " | ".join(f"**{ratio[m]:.3f}**" for m in methods) + " |")
        lines.append("| seconds per layer (mean) | " + " | ".join(f"{secs[m]:.2f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f}s")
