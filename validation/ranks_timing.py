"""Benchmark: torch.distributed layer sharding on this machine, 2 gloo ranks vs 1 process.

Prunes the embedded SmolLM2-135M with the same settings three ways: 1 process with 1 thread,
1 process with 2 threads, and `torchrun --nproc-per-node 2` (gloo, 1 thread per rank: each rank
carries half the calibration windows, the Grams are all-reduced, each rank solves its share of
the layer problems).  Reports wall time and the pruning time each run measured, and compares
every saved tensor with the 1-process result: same zero pattern, largest relative difference.  Writes docs/results/ranks_timing.md (+ .json).
Usage: python validation/ranks_timing.py --method sparsegpt --pattern per-row --nsamples 32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def prune(out: Path, ranks: int, threads: int, args) -> dict:
    cli = ["prune", "--method", args.method, "--pattern", args.pattern, "--sparsity", str(args.sparsity),
           "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--out", str(out), "--no-resume",
           "--device", "cpu", "--row-shards", str(args.row_shards)]
    if args.data_dir:
        cli += ["--data-dir", args.data_dir]
    launcher = [sys.executable, "-m", "optprune"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "-m", "optprune"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run(launcher + cli, check=True, env=env)
    wall = time.perf_counter() - t0
    report = json.loads((out / "optprune_report.json").read_text())
    return dict(ranks=ranks, threads_per_rank=threads, wall_seconds=wall, prune_seconds=report["prune_seconds"],
                solver_seconds=sum(r["seconds"] for r in report["layers"]), mean_rel_error=report["mean_rel_error"])


def compare(a: Path, b: Path) -> dict:
    """Share of pruned weights whose zero pattern differs, and the largest relative weight difference."""
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    flips = sum(int(((ta[k] == 0) != (tb[k] == 0)).sum()) for k in ta)
    total = sum(ta[k].numel() for k in ta)
    diff = max(float((ta[k].float() - tb[k].float()).norm() / ta[k].float().norm().clamp_min(1e-30)) for k in ta)
    return dict(mask_flips=flips / total, max_rel_weight_diff=diff)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="sparsegpt")
    ap.add_argument("--pattern", default="per-row")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--row-shards", type=int, default=1)
    ap.add_argument("--data-dir", default="")
    args = ap.parse_args()
    work = ROOT / "runs" / "ranks_timing"
    rows = []
    for ranks, threads in ((1, 1), (1, 2), (2, 1)):
        rows.append(prune(work / f"r{ranks}t{threads}", ranks, threads, args))
        rows[-1].update(compare(work / "r1t1", work / f"r{ranks}t{threads}"))
        print(rows[-1], flush=True)
    out = ROOT / "docs" / "results" / "ranks_timing"
    out.with_suffix(".json").write_text(json.dumps(dict(settings=vars(args), runs=rows), indent=2))
    lines = ["# Layer sharding over torch.distributed ranks (SmolLM2-135M, 2-core CPU)\n",
             f"`{args.method}`, {args.pattern} {args.sparsity:.0%}, calibration {args.nsamples} x {args.seqlen} "
             f"tokens (local C4, seed 0), row shards {args.row_shards}, bf16 forward passes, gloo backend. Solver "
             "seconds are summed over the layer problems, as each owning rank measured them. Command: "
             f"`python validation/ranks_timing.py --method {args.method} --pattern {args.pattern} "
             f"--nsamples {args.nsamples} --row-shards {args.row_shards}`. Each run is compared with the 1-process, "
             "1-thread run: the share of weights whose zero pattern differs and the largest relative (Frobenius) "
             "difference of a saved tensor. 2 threads change the reduction order of the bf16 forward passes, 2 "
             "ranks the order of the Gram sums (each rank carries half the windows, the Grams are all-reduced); "
             "both differ from the reference in float rounding only. On one 2-core machine 2 ranks of 1 thread "
             "use the same cores as 1 process of 2 threads.\n",
             "| ranks | threads per rank | wall s | prune s | solver s (sum) | mean layer rel. error | "
             "mask entries differing | max rel. weight difference |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ranks']} | {r['threads_per_rank']} | {r['wall_seconds']:.0f} | {r['prune_seconds']:.0f} | "
                     f"{r['solver_seconds']:.0f} | {r['mean_rel_error']:.5g} | {r['mask_flips']:.2e} | "
                     f"{r['max_rel_weight_diff']:.2e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
