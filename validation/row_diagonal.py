"""Benchmark: does a diagonal of its own per row tighten the QCR bound beyond the layer's shared diagonal?

The QCR bound (`optprune.exact.row_bounds`) of row i rests on a diagonal lam >= 0 with G - diag(lam) PSD.
`validation/row_bounds.py` shares one lam per Gram (max sum_j a_j lam_j, a_j = mean_i w_ij^2); a row of its
own would take max sum_j w_ij^2 lam_j.  For a sample of rows (seed 0) of a few real SmolLM2 layers at 50%
per-row this prices both against the row's SparseSwaps mask (mask-only objective): gap = objective / bound.
Writes docs/results/row_diagonal.md (+ .json).
Usage: python validation/row_diagonal.py [--layers 00.up_proj,14.k_proj,29.v_proj] [--rows 4] [--threads 1]
"""
from __future__ import annotations

import time

import numpy as np
import torch

from optprune.exact.row_bounds import qcr_bound, shared_diagonal
from optprune.problem import LayerProblem
from sampled_rows import PATTERN, arguments, run, shared_qcr, swaps_rows


def row_gaps(prob: LayerProblem, rows: np.ndarray, iters: int) -> list[dict]:
    """Each sampled row's SparseSwaps objective against the QCR bound with the shared and its own diagonal."""
    sub, mask, objective, W, G = swaps_rows(prob, rows)
    shared, shared_s = shared_qcr(sub, W, G, mask, iters)
    out = []
    for i, r in enumerate(rows):
        t0 = time.perf_counter()
        own = shared_diagonal(G, W[r] ** 2)
        one = LayerProblem(torch.from_numpy(W[r:r + 1]), torch.from_numpy(G), "row")
        bound = qcr_bound(one, PATTERN, own, start=mask[i:i + 1], iters=iters).per_row[0]
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
    run(arguments(rows=4, iters=500, out="row_diagonal.md"), row_gaps, render)


if __name__ == "__main__":
    main()
