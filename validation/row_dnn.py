"""Benchmark: the DNN relaxation's bound on full rows of real SmolLM2 layers, against the QCR bound.

For a sample of rows (seed 0) of a few layers at 50% per-row, the row's SparseSwaps mask (mask-only objective)
is priced against (a) the QCR bound with the layer's shared diagonal (`optprune.exact.row_bounds`) and (b)
the doubly nonnegative relaxation (`optprune.formulations.dnn`: Shor SDP + cardinality RLT products +
nonnegative products) solved by ADMM for --iters steps (`optprune.exact.dnn.dnn_row_bound`); both bounds
are rigorous.  gap = objective / bound (1 = proven optimal).  The ADMM's last primal value (not a bound)
shows where the DNN bound converges to.  Writes docs/results/row_dnn.md (+ .json).
Usage: python validation/row_dnn.py [--layers 00.up_proj,14.k_proj,29.v_proj] [--rows 1] [--iters 2000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from optprune import Pattern, load_layer_problems, prune_layer
from optprune.exact.dnn import dnn_row_bound
from optprune.exact.row_bounds import qcr_bound, shared_diagonal
from optprune.pipeline.run import machine_name
from optprune.problem import LayerProblem

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "layers"
FILES = {"00": SHARED / "smollm2-135m_block00.safetensors", "29": SHARED / "smollm2-135m_block29.safetensors",
         "14": ROOT / "runs" / "layers" / "smollm2-135m_block14.safetensors"}


def row_gaps(prob: LayerProblem, pattern: Pattern, rows: np.ndarray, iters: int) -> list[dict]:
    """Each sampled row's SparseSwaps objective against its QCR (shared diagonal) and DNN bounds."""
    W, G = prob.float64()
    sub = LayerProblem(torch.from_numpy(W[rows]), torch.from_numpy(G), "rows")
    mask = prune_layer(sub, pattern, "sparseswaps").mask
    objective = sub.row_errors(mask).double().numpy()
    t0 = time.perf_counter()
    qcr = qcr_bound(sub, pattern, shared_diagonal(G, (W ** 2).mean(0)), start=mask, iters=500).per_row
    qcr_s = (time.perf_counter() - t0) / len(rows)
    out = []
    for i, r in enumerate(rows):
        dnn = dnn_row_bound(sub, pattern, i, iters, start=mask[i].numpy())
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
             "layer's shared-diagonal bound per row (the diagonal's barrier solve not included).", "",
             "| layer | row | inputs | gap, QCR | gap, DNN | DNN limit | DNN steps | DNN s |",
             "|---|---|---|---|---|---|---|---|"]
    for layer, rows in done["layers"].items():
        lines += [f"| {layer} | {r['row']} | {r['cols']} | {r['gap_qcr']:.3f} | {r['gap_dnn']:.3f} | "
                  f"{r['primal_gap']:.3f} | {r['iterations']} | {r['dnn_s']:.0f} |" for r in rows]
    every = [r for rows in done["layers"].values() for r in rows]
    lines += ["", f"Over {len(every)} rows: QCR gap median {np.median([r['gap_qcr'] for r in every]):.3f}, "
              f"DNN gap median {np.median([r['gap_dnn'] for r in every]):.3f} (best {min(r['gap_dnn'] for r in every):.3f}), "
              f"DNN limit median {np.median([r['primal_gap'] for r in every]):.3f}."]
    lines += ["", done["note"]] if done.get("note") else []
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="00.up_proj,14.k_proj,29.v_proj")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "row_dnn.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pattern = Pattern.parse("per-row", 0.5)
    done = dict(machine=machine_name(), threads=args.threads, iters=args.iters, rows=args.rows, layers={})
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
