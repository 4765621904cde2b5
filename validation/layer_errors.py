"""Benchmark: per-layer relative error of every method vs Wanda, and seconds per layer.

Real SmolLM2-135M layer problems (shared/data/layers: blocks 0 and 29, all 7 linears).
rel. error = tr(D G D^T) / tr(W G W^T) with each method's own W_hat.
Writes docs/results/layer_errors.md.
Usage: python validation/layer_errors.py [--settings per-row:0.5,2:4] [--blocks 00,29]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from optprune import Pattern, load_layer_problems, prune_layer
from optprune.pipeline.run import machine_name

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "wanda", "sparsegpt", "sparsefw", "sparseswaps", "maiht"]


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
    lines = ["# Per-layer relative error on real SmolLM2-135M layers\n",
             f"Machine: {machine_name()}, float32. Relative error tr(D G D^T)/tr(W G W^T) with each method's "
             "own weights (sparsegpt and maiht update kept weights; the others are masks only). "
             "Default options of each method. Block 14 comes from `validation/dump_layer_problems.py` (same "
             "protocol as shared/data/layers). Command: `python validation/layer_errors.py "
             f"--settings {args.settings} --blocks {args.blocks}`. {args.note}\n"]
    for setting in args.settings.split(","):
        spec, _, sp = setting.partition(":")
        pattern = Pattern.parse(spec, float(sp) if sp else None)
        lines += [f"\n## {pattern.name}, sparsity {pattern.sparsity:.2f}\n",
                  "| layer | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
        ratios = {m: [] for m in METHODS}
        secs = {m: [] for m in METHODS}
        for blk in args.blocks.split(","):
            probs = load_layer_problems(Path(args.layers_dir) / f"smollm2-135m_block{blk}.safetensors")
            for name, prob in probs.items():
                errs = {}
                for m in METHODS:
                    res = prune_layer(prob, pattern, m)
                    errs[m] = prob.relative_error(W_hat=res.weight)
                    secs[m].append(res.seconds)
                for m in METHODS:
                    ratios[m].append(errs[m] / errs["wanda"])
                lines.append(f"| {blk}.{name} | " + " | ".join(f"{errs[m]:.4g}" for m in METHODS) + " |")
                print(lines[-1], flush=True)
        lines.append("| **mean error / Wanda's** | " + " | ".join(f"**{np.mean(ratios[m]):.3f}**" for m in METHODS) + " |")
        lines.append("| seconds per layer (mean) | " + " | ".join(f"{np.mean(secs[m]):.2f}" for m in METHODS) + " |")
        Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f}s")
