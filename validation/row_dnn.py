"""Benchmark: the DNN relaxation's bound on full rows of real SmolLM2 layers, against the QCR bound.

For a sample of rows (seed 0) of a few layers at 50% per-row, the row's SparseSwaps mask (mask-only objective)
is priced against (a) the QCR bound with the layer's shared diagonal (`optprune.exact.row_bounds`) and (b)
the doubly nonnegative relaxation (`formulations.dnn`: Shor SDP + cardinality RLT products +
nonnegative products) solved by ADMM for --iters steps (`optprune.exact.dnn.dnn_row_bound`); both bounds
are rigorous.  gap = objective / bound (1 = proven optimal).  The ADMM's last primal value (not a bound)
shows where the DNN bound converges to.  Writes docs/results/row_dnn.md (+ .json).
Usage: python validation/row_dnn.py [--layers 00.up_proj,14.k_proj,29.v_proj] [--rows 1] [--iters 2000]
"""
from __future__ import annotations

import numpy as np

from optprune.exact.dnn import dnn_row_bound
from optprune.problem import LayerProblem
from sampled_rows import PATTERN, arguments, run, shared_qcr, swaps_rows


def row_gaps(prob: LayerProblem, rows: np.ndarray, iters: int) -> list[dict]:
    """Each sampled row's SparseSwaps objective against its QCR (shared diagonal) and DNN bounds."""
    sub, mask, objective, W, G = swaps_rows(prob, rows)
    qcr, seconds = shared_qcr(sub, W, G, mask, 500)
    qcr_s = seconds / len(rows)
    out = []
    for i, r in enumerate(rows):
        dnn = dnn_row_bound(sub, PATTERN, i, iters, start=mask[i].numpy())
        out.append(dict(row=int(r), cols=int(W.shape[1]), objective=float(objective[i]),
                        gap_qcr=float(objective[i] / qcr[i]), qcr_s=qcr_s, gap_dnn=float(objective[i] / dnn.bound),
                        primal_gap=float(objective[i] / dnn.primal), dnn_s=dnn.seconds, iterations=dnn.iterations))
        print(out[-1], flush=True)
    return out


def render(done: dict) -> str:
    lines = ["# Full-row bounds: the DNN relaxation against QCR", "",
             f"Written by `python validation/row_dnn.py --iters {done['iters']} --rows {done['rows']}` "
             f"({done['machine']}; module doc: what is compared). 50% per-row, SparseSwaps masks, mask-only "
             "objective; gap = objective / rigorous bound (1 = proven optimal). 'DNN limit' is objective / the "
             "ADMM's last primal value: where the DNN bound converges to, not itself a bound. QCR seconds: the "
             "layer's shared-diagonal bound per row (the diagonal's barrier solve not included). Certificate: the "
             "row's larger bound of the two (what `optprune certify --full-row-bounds --dnn-iters` reports).", "",
             "| layer | row | inputs | gap, QCR | gap, DNN | gap, certificate | DNN limit | DNN steps | DNN s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for layer, rows in done["layers"].items():
        lines += [f"| {layer} | {r['row']} | {r['cols']} | {r['gap_qcr']:.3f} | {r['gap_dnn']:.3f} | "
                  f"{min(r['gap_qcr'], r['gap_dnn']):.3f} | {r['primal_gap']:.3f} | {r['iterations']} | "
                  f"{r['dnn_s']:.0f} |" for r in rows]
    every = [r for rows in done["layers"].values() for r in rows]
    lines += ["", f"Over {len(every)} rows: QCR gap median {np.median([r['gap_qcr'] for r in every]):.3f}, "
              f"DNN gap median {np.median([r['gap_dnn'] for r in every]):.3f} (best {min(r['gap_dnn'] for r in every):.3f}), "
              f"DNN limit median {np.median([r['primal_gap'] for r in every]):.3f}."]
    lines += ["", done["note"]] if done.get("note") else []
    return "\n".join(lines) + "\n"


def main():
    args = arguments(rows=1, iters=2000, out="row_dnn.md")
    run(args, row_gaps, render, rows=args.rows)


if __name__ == "__main__":
    main()
