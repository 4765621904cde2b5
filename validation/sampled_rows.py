"""Shared by the row-bound benchmarks (row_diagonal.py, row_dnn.py): real SmolLM2 layer problems at 50%
per-row, a seeded sample of each layer's rows, their SparseSwaps masks and the layer's shared-diagonal QCR
bound on them, the loop that writes a benchmark's .md and .json, and the pattern of a setting name as the
benchmarks' tables spell it (`setting_pattern`, also used by layer_errors, row_bounds and neighbourhoods)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from optprune import Pattern, load_layer_problems, prune_layer
from optprune.exact.row_bounds import qcr_bound, shared_diagonal
from optprune.parallel import machine_name
from optprune.problem import LayerProblem

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "layers"
FILES = {"00": SHARED / "smollm2-135m_block00.safetensors", "29": SHARED / "smollm2-135m_block29.safetensors",
         "14": ROOT / "runs" / "layers" / "smollm2-135m_block14.safetensors"}
PATTERN = Pattern.parse("per-row", 0.5)


def setting_pattern(setting: str) -> Pattern:
    """The pattern of a table's setting name: 'per-row:0.6', 'unstructured:0.5' (kind:sparsity) or '2:4'."""
    spec, _, sparsity = setting.partition(":")
    return Pattern.parse(setting) if spec.isdigit() else Pattern.parse(spec, float(sparsity) if sparsity else None)


def swaps_rows(prob: LayerProblem, rows: np.ndarray):
    """(the rows' sub-problem, their SparseSwaps keep mask, each row's mask-only objective, W, G in float64)."""
    W, G = prob.float64()
    sub = LayerProblem(torch.from_numpy(W[rows]), torch.from_numpy(G), "rows")
    mask = prune_layer(sub, PATTERN, "sparseswaps").mask
    return sub, mask, sub.row_errors(mask).double().numpy(), W, G


def shared_qcr(sub: LayerProblem, W: np.ndarray, G: np.ndarray, mask, iters: int) -> tuple[np.ndarray, float]:
    """Each row's QCR bound with the layer's shared diagonal (max sum_j mean_i w_ij^2 lam_j), and its seconds."""
    t0 = time.perf_counter()
    bound = qcr_bound(sub, PATTERN, shared_diagonal(G, (W ** 2).mean(0)), start=mask, iters=iters).per_row
    return bound, time.perf_counter() - t0


def arguments(rows: int, iters: int, out: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="00.up_proj,14.k_proj,29.v_proj")
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / out))
    return ap.parse_args()


def run(args: argparse.Namespace, row_gaps, render, **extra) -> None:
    """row_gaps(prob, rows, iters) on each layer's seeded sample of rows; the results to args.out (.md, .json)."""
    torch.set_num_threads(args.threads)
    done = dict(machine=machine_name(), threads=args.threads, iters=args.iters, **extra, layers={})
    for layer in args.layers.split(","):
        block, _, name = layer.partition(".")
        if not FILES[block].exists():
            raise SystemExit(f"{FILES[block]}: no layer problems (optprune dump-layers writes them)")
        prob = load_layer_problems(FILES[block])[name].to(torch.float64)
        rows = np.sort(np.random.default_rng(0).choice(prob.shape[0], args.rows, replace=False))
        done["layers"][layer] = row_gaps(prob, rows, args.iters)
    Path(args.out).with_suffix(".json").write_text(json.dumps(done, indent=1))
    Path(args.out).write_text(render(done))
    print(render(done))
