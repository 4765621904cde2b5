"""Benchmark: rigorous full-row lower bounds on real SmolLM2 layers, and the certified gap they give.

For every linear of the given blocks (real layer problems: shared/data/layers, or `optprune dump-layers`):
* mask only: every entrywise method's mask-only objective (its mask, W * M; MASK_METHODS) against the box
  bound and the QCR bound (`optprune.exact.row_bounds`) on every row, the best mask's row gaps summarised;
* mask + refit: the best refit objective (sparsegpt, sparseswaps+refit) against the perspective bound, on a
  sample of rows (seed 0; the perspective costs one d x d solve per row and iteration).
Gap = best objective / bound over the same rows (1 = proven optimal).  Seconds are wall-clock on this machine.
Writes docs/results/row_bounds.md (+ .json).
Usage: python validation/row_bounds.py [--setting per-row:0.5] [--files F,...] [--sample-rows 32]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from optprune import load_layer_problems, prune_layer
from optprune.exact.row_bounds import perspective_bound, qcr_bound, shared_diagonal
from optprune.parallel import machine_name
from sampled_rows import setting_pattern     # this folder's sibling script

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ROOT.parent / "shared" / "data" / "layers"
MASK_METHODS = ["magnitude", "wanda", "sparsegpt", "sparsefw", "maiht", "sparseswaps", "admm"]


def diagonal_for(prob, cache: dict) -> tuple[np.ndarray, float]:
    """The shared diagonal of this Gram (computed once per Gram: q/k/v and gate/up share theirs)."""
    W, G = prob.float64()
    key = (G.shape[0], float(G.trace()))
    if key not in cache:
        t0 = time.perf_counter()
        cache[key] = (shared_diagonal(G, (W ** 2).mean(0)), time.perf_counter() - t0)
    return cache[key]


def layer_row(prob, pattern, sample: np.ndarray, cache: dict, iters: int) -> dict:
    energy = prob.dense_energy()
    masks = {m: prune_layer(prob, pattern, m) for m in MASK_METHODS}
    mask_only = {m: prob.relative_error(r.mask) for m, r in masks.items()}
    best = min(mask_only, key=mask_only.get)
    lam, lam_s = diagonal_for(prob, cache)
    box = qcr_bound(prob, pattern, None, start=masks[best].mask, iters=iters)
    qcr = qcr_bound(prob, pattern, lam, start=masks[best].mask, iters=iters)
    refits = {"sparsegpt": masks["sparsegpt"].weight,
              "sparseswaps+refit": prob.refit(masks["sparseswaps"].mask, masks["sparseswaps"].weight)}
    refit_rows = {m: prob.row_errors(W_hat=w).double().numpy()[sample] for m, w in refits.items()}
    best_refit = min(refit_rows, key=lambda m: refit_rows[m].sum())
    persp = perspective_bound(prob, pattern, lam, rows=sample, start=masks["sparsegpt"].mask)
    best_rows = prob.row_errors(masks[best].mask).double().numpy()
    qcr_gaps = best_rows / np.maximum(qcr.per_row, 1e-300)
    return dict(mask_only=mask_only, best=best, box=box.value / energy, qcr=qcr.value / energy,
                gap_box=mask_only[best] * energy / max(box.value, 1e-300),
                gap_qcr=mask_only[best] * energy / max(qcr.value, 1e-300),
                qcr_row_gap_quartiles=np.percentile(qcr_gaps, [0, 25, 50, 75, 100]).tolist(),
                box_s=box.seconds, qcr_s=qcr.seconds, diagonal_s=lam_s,
                refit=refit_rows[best_refit].sum() / energy, best_refit=best_refit, perspective=persp.value / energy,
                gap_perspective=refit_rows[best_refit].sum() / max(persp.value, 1e-300),
                perspective_s=persp.seconds, sample_rows=len(sample))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default=",".join(str(LAYERS / f"smollm2-135m_block{b}.safetensors") for b in ("00", "29")))
    ap.add_argument("--setting", default="per-row:0.5")
    ap.add_argument("--sample-rows", type=int, default=32)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "row_bounds.md"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pattern = setting_pattern(args.setting)
    store = Path(args.out).with_suffix(".json")
    done = json.loads(store.read_text()) if store.exists() else {}
    table = done.setdefault(args.setting, {"rows": {}})
    for path in args.files.split(","):
        block = Path(path).stem.rsplit("block", 1)[-1]
        cache = {}
        for name, prob in load_layer_problems(path).items():
            sample = np.sort(np.random.default_rng(0).choice(prob.shape[0], args.sample_rows, replace=False))
            table["rows"][f"{block}.{name}"] = row = layer_row(prob.to(torch.float64), pattern, sample, cache, args.iters)
            print(block, name, {k: v for k, v in row.items() if "gap" in k}, flush=True)
            table.update(machine=machine_name(), iters=args.iters, sample_rows=args.sample_rows, command=command_line())
            store.write_text(json.dumps(done, indent=1))
            Path(args.out).write_text(render(done))
    print(render(done))


def command_line() -> str:
    """This run's command as the table names it (the layer files by their names only)."""
    argv = [",".join(Path(f).name for f in a.split(",")) if ".safetensors" in a else a for a in sys.argv[1:]]
    return " ".join(["python validation/row_bounds.py"] + argv)


def ratio(x: float) -> str:
    """A gap for the table ('inf' where a row's bound is 0: nothing proven there)."""
    return "inf" if x > 1e6 else f"{x:.2f}"


def render(done: dict) -> str:
    lines = ["# Rigorous full-row lower bounds on SmolLM2 layers", "",
             "Written by `validation/row_bounds.py`, each setting with the command under its heading (module doc: "
             "what each column is). Layer files: blocks 00 and 29 from shared/data/layers, block 14 written by "
             "`python validation/dump_layer_problems.py --blocks 14` with the same protocol. "
             "Dense-model layer problems, 32 x 512 WikiText-2 validation tokens. Relative units "
             "(objective / tr(W G W^T)). Gap = best objective / bound: 1 is proven optimal; the issue's target is "
             "<= 1.10. Mask only: every row; mask + refit: a sample of rows (seed 0), objective and bound on "
             "the same rows.", ""]
    for setting, table in done.items():
        lines += [f"## {setting} ({table.get('machine', '')}; {table.get('iters')} iterations)", "",
                  f"Command: `{table.get('command', '')}`{table.get('note', '')}", "",
                  "| layer | best mask (mask only) | its error | box bound | gap | QCR bound | gap | QCR per-row gap "
                  "min / median / max | box s | QCR s (+ diagonal s) | best refit | its error | perspective "
                  "bound | gap | perspective s |", "|" + "---|" * 15]
        for layer, r in table["rows"].items():
            q = r["qcr_row_gap_quartiles"]
            lines.append(f"| {layer} | {r['best']} | {r['mask_only'][r['best']]:.4g} | {r['box']:.4g} | "
                         f"{r['gap_box']:.3f} | {r['qcr']:.4g} | {r['gap_qcr']:.3f} | {ratio(q[0])} / {ratio(q[2])} / "
                         f"{ratio(q[4])} | {r['box_s']:.1f} | {r['qcr_s']:.1f} (+{r['diagonal_s']:.1f}) | "
                         f"{r['best_refit']} | {r['refit']:.4g} | {r['perspective']:.4g} | {r['gap_perspective']:.3f} | "
                         f"{r['perspective_s']:.1f} |")
        lines += [""] + method_gaps(table["rows"]) + [""]
    return "\n".join(lines) + "\n"


def method_gaps(rows: dict) -> list[str]:
    """Every method's certified gap (its mask-only objective / the QCR bound) per layer, and their median."""
    methods = [m for m in MASK_METHODS if any(m in r["mask_only"] for r in rows.values())]
    lines = ["Every method's mask (W * M) against the QCR bound: certified gap per layer (its objective / the "
             "bound; '-' where the method was not run).", "",
             "| layer | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    gaps = {m: [] for m in methods}
    for layer, r in rows.items():
        cells = []
        for m in methods:
            g = r["mask_only"][m] / max(r["qcr"], 1e-300) if m in r["mask_only"] else None
            cells.append("-" if g is None else ratio(g))
            if g is not None:
                gaps[m].append(g)
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| **median** | " + " | ".join(ratio(float(np.median(gaps[m]))) if gaps[m] else "-" for m in methods)
                 + " |")
    return lines


if __name__ == "__main__":
    main()
