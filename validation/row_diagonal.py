"""Benchmark: does a diagonal of its own per row tighten the QCR bound beyond the layer's shared diagonal?

The QCR bound (`optprune.exact.row_bounds`) of row i rests on a diagonal lam >= 0 with G - diag(lam) PSD.
`validation/row_bounds.py` shares one lam per Gram (max sum_j a_j lam_j, a_j = mean_i w_ij^2); a row of its
own would take max sum_j w_ij^2 lam_j.  For a sample of rows (seed 0) of a few real SmolLM2 layers at 50%
per-row this prices both against the row's SparseSwaps mask (mask-only objective): gap = objective / bound.
Writes docs/results/row_diagonal.md (+ .json).
Usage: python validation/row_diagonal.py [--layers 00.up_proj,14.k_proj,29.v_proj] [--rows 4] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from optprune import Pattern, load_layer_problems, prune_layer
from optprune.exact.row_bounds import qcr_bound, shared_diagonal
from optprune.pipeline.run import machine_name
from optprune.problem import LayerProblem

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "layers"
FILES = {"00": SHARED / "smollm2-135m_block00.safetensors", "29": SHARED / "smollm2-135m_block29.safetensors",
         "14": ROOT / "runs" / "layers" / "smollm2-135m_block14.safetensors"}


def row_gaps(prob: LayerProblem, pattern: Pattern, rows: np.ndarray, iters: int) -> list[dict]:
    """Each sampled row's SparseSwaps objective against the QCR bound with the shared and its own diagonal."""
    W, G = prob.float64()
    sub = LayerProblem(torch.from_numpy(W[rows]), torch.from_numpy(G), "rows")
    mask = prune_layer(sub, pattern, "sparseswaps").mask
    objective = sub.row_errors(mask).double().numpy()
    t0 = time.perf_counter()
    shared = qcr_bound(sub, pattern, shared_diagonal(G, (W ** 2).mean(0)), start=mask, iters=iters).per_row
    shared_s = time.perf_counter() - t0
    out = []
    for i, r in enumerate(rows):
        t0 = time.perf_counter()
        own = shared_diagonal(G, W[r] ** 2)
        one = LayerProblem(torch.from_numpy(W[r:r + 1]), torch.from_numpy(G), "row")
        bound = qcr_bound(one, pattern, own, start=mask[i:i + 1], iters=iters).per_row[0]
        out.append(dict(row=int(r), objective=float(objective[i]), gap_shared=float(objective[i] / shared[i]),
                        gap_own=float(objective[i] / bound), own_s=time.perf_counter() - t0, shared_s=shared_s))
        print(out[-1], flush=True)
    return out


def render(done: dict) -> str:
    lines = ["# QCR bound: a diagonal per row against the layer's shared diagonal", "",
             f"Written by `python validation/row_diagonal.py` ({done['machine']}, {done['iters']} iterations; "
             "module doc: what is compared). 50% per-row, SparseSwaps masks, "
             "mask-only objective; gap = objective / bound (1 = proven optimal). Own-diagonal seconds: the "
             "barrier solve of that row's diagonal plus its bound.", "",
             "| layer | row | gap, shared diagonal | gap, own diagonal | own diagonal s |", "|---|---|---|---|---|"]
    for layer, rows in done["layers"].items():
        lines += [f"| {layer} | {r['row']} | {r['gap_shared']:.3f} | {r['gap_own']:.3f} | {r['own_s']:.1f} |"
                  for r in rows]
    own = [r["gap_own"] / r["gap_shared"] for rows in done["layers"].values() for r in rows]
    lines += ["", f"Own diagonal / shared diagonal, gap ratio over {len(own)} rows: min {min(own):.3f}, "
              f"median {float(np.median(own)):.3f}, max {max(own):.3f} (below 1: the own diagonal is tighter).",
              "", "For comparison (measured once, not by this script): the Shor SDP with the cardinality RLT cuts "
              "(Z 1 = p z, Z >= 0) gave a gap of 1.149 on row 0 of 00.up_proj (SCS, 577 x 577, 975 s), where "
              "the shared diagonal gives 1.500. Where the diagonal alone gains nothing, that SDP's gain comes "
              "from coupling the row's cardinality into the quadratic."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="00.up_proj,14.k_proj,29.v_proj")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "row_diagonal.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pattern = Pattern.parse("per-row", 0.5)
    done = dict(machine=machine_name(), threads=args.threads, iters=args.iters, layers={})
    for layer in args.layers.split(","):
        block, _, name = layer.partition(".")
        if not FILES[block].exists():
            raise SystemExit(f"{FILES[block]}: no layer problems (optprune dump-layers writes them)")
        prob = load_layer_problems(FILES[block])[name].to(torch.float64)
        rows = np.sort(np.random.default_rng(0).choice(prob.shape[0], args.rows, replace=False))
        done["layers"][layer] = row_gaps(prob, pattern, rows, args.iters)
    Path(args.out).with_suffix(".json").write_text(json.dumps(done, indent=1))
    Path(args.out).write_text(render(done))
    print(render(done))


if __name__ == "__main__":
    main()
