"""Benchmark: largest sub-block (row window) HiGHS certifies within 10 s per row.

Real SmolLM2-135M layers (shared/data/layers), 50% per-row, base mask from
Wanda; for each window size n the exact MILP (McCormick + RLT) runs on
rows 0..R-1 of each layer with a 10 s limit.  Writes docs/results/certify_block_size.md.
Usage: python validation/certify_block_size.py [--layers-dir ../shared/data/layers]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from optprune import Pattern, load_layer_problems, prune_layer
from optprune.exact import build_subblock, certify_block

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers-dir", default=str(ROOT.parent / "shared" / "data" / "layers"))
    ap.add_argument("--sizes", default="16,24,32,40,48,56,64")
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--method", default="milp")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "certify_block_size.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    pattern = Pattern("per-row", 0.5)
    targets = [("smollm2-135m_block00.safetensors", "q_proj"), ("smollm2-135m_block00.safetensors", "up_proj"),
               ("smollm2-135m_block29.safetensors", "up_proj"), ("smollm2-135m_block29.safetensors", "down_proj")]
    sizes = [int(s) for s in args.sizes.split(",")]
    lines = [f"# Largest sub-block certified within {args.time_limit:.0f} s per row\n",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, no GPU. "
             f"HiGHS exact method: `{args.method}` (McCormick + RLT linearisation). 50% per-row, "
             f"window = first n columns of the row, rest of the row fixed to Wanda's mask (also the MIP start), "
             f"rows 0..{args.rows - 1} of each layer. Command: `python validation/certify_block_size.py`.\n",
             "| layer | window n | rows certified | max seconds | mean seconds | mean improvement over Wanda on the window |",
             "|---|---|---|---|---|---|"]
    largest = {}
    for fname, name in targets:
        prob = load_layer_problems(Path(args.layers_dir) / fname, [name])[name]
        base = prune_layer(prob, pattern, "wanda").mask
        label = f"{fname.split('_')[1].split('.')[0]}.{name}"
        for n in sizes:
            times, ok, gains = [], 0, []
            for r in range(args.rows):
                sb = build_subblock(prob, pattern, base, rows=[r], window=np.arange(n))
                res = certify_block(sb, args.method, sb.keep_units(base), time_limit=args.time_limit)
                times.append(res.seconds)
                ok += res.certified and res.seconds <= args.time_limit
                start = sb.value(sb.keep_units(base))
                gains.append((start - res.objective) / max(start, 1e-30))
            lines.append(f"| {label} | {n} | {ok}/{args.rows} | {max(times):.2f} | {np.mean(times):.2f} | "
                         f"{np.mean(gains):.1%} |")
            print(lines[-1], flush=True)
            if ok == args.rows:
                largest[label] = n
            else:
                break
    lines.append("\nLargest window with every row certified within the limit: " +
                 ", ".join(f"{k}: **{v}**" for k, v in largest.items()) + ".\n")
    Path(args.out).write_text("\n".join(lines))
    print(lines[-1])


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f}s")
