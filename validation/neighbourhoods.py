"""Benchmark: neighbourhood certificates on full SmolLM2 rows, per method.

For each layer and each method's mask (`--setting`, 50% per-row by default), `certify_rows` frees the row's
most ambiguous decisions (16, 32, 64, 128, ... while the row's time budget lasts) and solves them exactly
(mask only: `bnb-qcr`, branch and bound on QCR bounds; under N:M the window is whole groups); a better
mask found in a window is taken and the next window solved around it.  Per layer and method: the largest
neighbourhood certified in each row (for the improved mask where one was found), and in how many rows a
better mask was found (with the mean improvement of those rows' mask-only error).  Rows are a sample
(seed 0).  Block 14 is read from runs/layers (written by validation/dump_layer_problems.py) when present.
Writes docs/results/neighbourhoods.md (+ .json).
Usage: python validation/neighbourhoods.py [--setting per-row:0.6] [--layers 00.q_proj,00.up_proj]
                                           [--rows 4] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from optprune import load_layer_problems, prune_layer
from optprune.exact.neighbourhood import certify_rows
from optprune.parallel import machine_name
from sampled_rows import setting_pattern     # this folder's sibling script

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ROOT.parent / "shared" / "data" / "layers"
METHODS = ["wanda", "sparsegpt", "sparseswaps"]


def layer_file(block: str) -> Path:
    """Blocks 00 and 29 from shared/data/layers; others (14) from runs/layers when dumped there."""
    shared = LAYERS / f"smollm2-135m_block{block}.safetensors"
    return shared if shared.exists() else ROOT / "runs" / "layers" / shared.name


def method_row(problem, pattern, mask, rows, seconds) -> dict:
    certs = {c.row: c for c in certify_rows(problem, pattern, mask, rows, time_budget=seconds)}
    sizes = [len(certs[r].positions) if r in certs and certs[r].certified else 0 for r in rows]
    better = [c for c in certs.values() if c.improved_mask is not None]
    gains = [(c.original_value - c.optimum) / c.original_value for c in better if c.original_value > 0]
    return dict(certified_sizes=sizes, improved=len(better), mean_gain=float(np.mean(gains)) if gains else 0.0,
                improved_sizes=[len(c.positions) for c in better],
                seconds=float(sum(c.seconds for c in certs.values())))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="00.q_proj,00.up_proj,00.down_proj,29.up_proj")
    ap.add_argument("--setting", default="per-row:0.5", help="the masks' pattern: per-row:0.6, 2:4, ...")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "neighbourhoods.md"))
    ap.add_argument("--context", default="quiet machine", help="what else ran on the machine (for the table)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pattern = setting_pattern(args.setting)
    store = Path(args.out).with_suffix(".json")
    done = json.loads(store.read_text()) if store.exists() else {}
    out = done[args.setting] = {"machine": machine_name(), "rows": args.rows, "seconds": args.seconds,
                                "layers": {}, "context": args.context}
    for layer in args.layers.split(","):
        block, name = layer.split(".", 1)
        problem = load_layer_problems(layer_file(block), [name])[name]
        rows = np.sort(np.random.default_rng(0).choice(problem.shape[0], args.rows, replace=False)).tolist()
        out["layers"][layer] = {m: method_row(problem, pattern, prune_layer(problem, pattern, m).mask, rows, args.seconds)
                                for m in METHODS}
        print(layer, out["layers"][layer], flush=True)
        store.write_text(json.dumps(done, indent=1))
        Path(args.out).write_text(render(done))


def render(done: dict) -> str:
    lines = ["# Neighbourhood certificates on full SmolLM2 rows", "",
             "Each method's own mask; rows sampled per layer (seed 0); per row a time budget for neighbourhoods "
             "of 16, 32, 64, 128, ... free decisions (the most ambiguous by w_j^2 G_jj; under N:M whole groups, "
             "those whose weakest kept and strongest pruned entries are closest), solved exactly by `bnb-qcr` "
             "(branch and bound on QCR bounds, each group's kept count fixed). 'certified' is the largest "
             "neighbourhood in which the row's mask (the improved one, where a smaller window found a better "
             "mask) was proven optimal (0: none finished).", ""]
    for setting, out in done.items():
        lines += setting_lines(setting, out)
    return "\n".join(lines) + "\n"


def setting_lines(setting: str, out: dict) -> list[str]:
    """One setting's section: its command, a row per layer and method, and the count of wide certificates."""
    lines = [f"## {setting}", "",
             f"Written by `python validation/neighbourhoods.py --setting {setting} --layers {','.join(out['layers'])} "
             f"--rows {out['rows']} --seconds {out['seconds']:g}` on {out['machine']} (one thread; "
             f"{out.get('context', '')}); {out['rows']} rows per layer, {out['seconds']:g} s per row.", "",
             "| layer | method | certified neighbourhood per row | rows certified at >= 64 | rows improved | "
             "mean gain of improved rows (mask-only error) | seconds of the rows' largest finished windows |",
             "|---|---|---|---|---|---|---|"]
    reached = total = 0
    for layer, methods in out["layers"].items():
        for m, r in methods.items():
            wide = sum(size >= 64 for size in r["certified_sizes"])
            reached, total = reached + wide, total + len(r["certified_sizes"])
            lines.append(f"| {layer} | {m} | {' / '.join(map(str, r['certified_sizes']))} | {wide} | {r['improved']} | "
                         f"{r['mean_gain']:.2%} | {r['seconds']:.0f} |")
    return lines + ["", f"Rows certified in a neighbourhood of at least 64 decisions: {reached} of {total}.", ""]


if __name__ == "__main__":
    main()
