"""What coupling a row's cardinality into its convexification buys, before anyone builds it per row.

QCR with a diagonal chosen for one row is the Shor SDP with diag(Z) = z (`row_diagonal.md`: the row's own
diagonal gains nothing over the layer's shared one).  QCR may also use the row's equality 1^T z = p: terms
(1^T z - p) beta^T z vanish on every feasible mask, and the best (u, beta) give the Shor SDP with the added
cuts Z 1 = p z (Billionnet, Elloumi and Lambert's QCR for equality-constrained programs).  This script
solves both SDPs (cvxpy + Clarabel) on sub-problems of real SmolLM2 rows: `--cols` random inputs of a row
(seed 0), half of them pruned, objective z^T Q z with Q = D_w G D_w normalised to trace 1, and reports the
best mask found (pairwise-swap local search from the |w| sqrt(G_jj) mask) over each bound.

Usage: python validation/cardinality_cut.py [--layers 29.k_proj,0.up_proj] [--rows 3,50] [--cols 96]
Needs ../shared/data/layers (the real layer files).  Writes docs/results/cardinality_cut.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from optprune import load_layer_problems

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ROOT.parent / "shared" / "data" / "layers"


def row_problem(layer: str, row: int, cols: int) -> np.ndarray:
    """Q (trace 1) of `cols` random inputs of the row: the error of pruning z is z^T Q z."""
    block, name = layer.split(".")
    problem = load_layer_problems(LAYERS / f"smollm2-135m_block{int(block):02d}.safetensors", [name])[name]
    W, G = problem.float64()
    pick = np.sort(np.random.default_rng(0).choice(W.shape[1], cols, replace=False))
    w = W[row, pick]
    Q = np.outer(w, w) * G[np.ix_(pick, pick)]
    return Q / np.trace(Q)


def swap_search(Q: np.ndarray, p: int) -> float:
    """Best pairwise-swap local minimum of z^T Q z over |z| = p, from the largest-saliency mask."""
    z = np.zeros(len(Q))
    z[np.argsort(np.diag(Q))[:p]] = 1
    value = z @ Q @ z
    while True:
        g = Q @ z   # swapping i (pruned) for j (kept) changes the value by 2(g_j - g_i) + Q_ii + Q_jj - 2 Q_ij
        delta = 2 * (g[None, :] - g[:, None]) + np.diag(Q)[:, None] + np.diag(Q)[None, :] - 2 * Q
        delta[z == 0, :], delta[:, z == 1] = np.inf, np.inf
        i, j = np.unravel_index(np.argmin(delta), delta.shape)
        if delta[i, j] >= -1e-15:
            return float(value)
        z[i], z[j], value = 0, 1, value + delta[i, j]


def shor_bound(Q: np.ndarray, p: int, cardinality_cuts: bool) -> float:
    import cvxpy as cp
    n = len(Q)
    X = cp.Variable((n + 1, n + 1), PSD=True)
    z, Z = X[0, 1:], X[1:, 1:]
    cons = [X[0, 0] == 1, cp.diag(Z) == z, cp.sum(z) == p]
    if cardinality_cuts:
        cons.append(Z @ np.ones(n) == p * z)
    problem = cp.Problem(cp.Minimize(cp.trace(Q @ Z)), cons)
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="29.k_proj,0.up_proj")
    ap.add_argument("--rows", default="3,50")
    ap.add_argument("--cols", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "cardinality_cut.md"))
    args = ap.parse_args()
    lines = ["# Cardinality cuts in a row's convexification: what they buy", "",
             f"Command: `python validation/cardinality_cut.py {' '.join(sys.argv[1:])}` (module doc: what is "
             f"compared). Sub-problems of {args.cols} random inputs of a row, half pruned; gap = best mask found / "
             "bound. Shor = QCR with the row's own optimal diagonal; + Z1 = pz = QCR that also uses the row's "
             "cardinality equality.", "",
             "| layer | row | gap, Shor (own diagonal) | gap, + Z1 = pz | Shor s | + cuts s |", "|---|---|---|---|---|---|"]
    for layer in args.layers.split(","):
        for row in (int(r) for r in args.rows.split(",")):
            Q, p = row_problem(layer, row, args.cols), args.cols // 2
            best = swap_search(Q, p)
            t0 = time.perf_counter()
            shor = shor_bound(Q, p, False)
            t1 = time.perf_counter()
            cut = shor_bound(Q, p, True)
            t2 = time.perf_counter()
            lines.append(f"| {layer} | {row} | {best / shor:.4f} | {best / cut:.4f} | {t1 - t0:.1f} | {t2 - t1:.1f} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
