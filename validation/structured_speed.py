"""Benchmark: structured pruning of SmolLM2-135M (MLP channels, KV groups): perplexity, parameters, speed.

For each sparsity s and method the model is pruned block by block, removing a share s of each
block's parameters (`parameter_matched_split`: round(3 s) of SmolLM2's 3 KV groups, selected on
o_proj's column groups, and MLP channels for the rest, selected on down_proj; gate/up rows and
down columns removed; config updated),
then evaluated on WikiText-2 and timed: forward tokens/s at batch 1 and 8 (sequence 256,
bf16 on CPU), dense and pruned runs interleaved, best of `--reps`.
Writes docs/results/structured_<tag>.md (+ .json; an interrupted run resumes).
Usage: python validation/structured_speed.py --sparsities 0.2,0.3,0.5 --nsamples 32 --max-windows 16
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from optprune import Pattern
from optprune.data import calibration_windows
from optprune.checkpoints.model_io import load_model
from optprune.evaluation import wikitext2_perplexity
from optprune.parallel import machine_name
from optprune.adapters import adapter_for, set_structured_config
from optprune.api import run_pruning
from optprune.config import PruneConfig
from optprune.engine import ResumeState

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "wanda", "magnitude+refit", "wanda+refit", "spap"]   # wanda = activation-norm channels


@torch.no_grad()
def tokens_per_second(net, batch: int, seq: int = 256, reps: int = 3) -> float:
    x = torch.randint(0, net.config.vocab_size, (batch, seq))
    net(x)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        net(x)
        best = min(best, time.perf_counter() - t0)
    return batch * seq / best


def time_against_dense(dense, net, reps: int, rounds: int = 2) -> dict:
    """tokens/s of both models at batch 1 and 8, interleaved so both see the same machine state;
    the speedup is the median over rounds of the per-round ratio (each round: best of `reps`)."""
    row = {}
    for b in (1, 8):
        d, p = [], []
        for _ in range(rounds):
            d.append(tokens_per_second(dense, b, reps=reps))
            p.append(tokens_per_second(net, b, reps=reps))
        ratios = sorted(pi / di for pi, di in zip(p, d))
        row[f"tps_b{b}"], row[f"dense_tps_b{b}"] = max(p), max(d)
        row[f"speedup_b{b}"] = ratios[len(ratios) // 2]
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", default="0.2,0.3,0.5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--tag", default="")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved dense/pruned timing rounds")
    ap.add_argument("--note", default="", help="a sentence on the run conditions for the table")
    ap.add_argument("--retime", action="store_true", help="only re-measure tokens/s of the finished rows, "
                    "rebuilding each pruned model from its saved blocks (run on a quiet machine)")
    args = ap.parse_args()
    tag = args.tag or f"n{args.nsamples}_w{args.max_windows or 'all'}"
    out_json = ROOT / "docs" / "results" / f"structured_{tag}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    dense, tok, _ = load_model(dtype=torch.bfloat16)
    if "dense" not in results:
        results["dense"] = dict(ppl=wikitext2_perplexity(dense, tok, args.seqlen, args.data_dir, args.max_windows)["ppl"],
                                params=sum(p.numel() for p in dense.parameters()))
    if args.retime:
        retime(results, dense, args, tag, out_json)
    else:
        prune_rows(results, dense, tok, args, tag, out_json)


def retime(results: dict, dense, args, tag: str, out_json: Path) -> None:
    """Re-measure tokens/s of the finished rows, each pruned model rebuilt from its saved blocks."""
    for key, row in results.items():
        if key != "dense" and key.split("/")[1] in args.methods.split(","):
            net, _, _ = load_model(dtype=torch.bfloat16)
            ResumeState(ROOT / "runs" / "structured" / tag / key, adapter_for(net)).load(net)
            set_structured_config(net, adapter_for(net))
            assert sum(p.numel() for p in net.parameters()) == row["params"], key
            row.update(time_against_dense(dense, net, args.reps, args.rounds))
            print(key, row, flush=True)
    out_json.write_text(json.dumps(results, indent=2))
    write_table(results, args, out_json.with_suffix(".md"))


def prune_rows(results: dict, dense, tok, args, tag: str, out_json: Path) -> None:
    """Prune, evaluate and time every (sparsity, method) row not yet in `results`, saving after each."""
    windows = calibration_windows(tok, "c4", args.nsamples, args.seqlen, 0, args.data_dir)
    for sp in [float(s) for s in args.sparsities.split(",")]:
        for method in args.methods.split(","):
            key = f"{sp:.2f}/{method}"
            if key in results:
                continue
            net, _, _ = load_model(dtype=torch.bfloat16)
            base, _, refit = method.partition("+")
            t0 = time.perf_counter()
            config = PruneConfig(method=base, pattern="structured", sparsity=sp, refit=bool(refit),
                                 nsamples=args.nsamples, seqlen=args.seqlen, device="cpu")
            run_pruning(net, windows, config, adapter_for(net), ROOT / "runs" / "structured" / tag / key)
            row = dict(prune_seconds=time.perf_counter() - t0,
                       ppl=wikitext2_perplexity(net, tok, args.seqlen, args.data_dir, args.max_windows)["ppl"],
                       params=sum(p.numel() for p in net.parameters()),
                       intermediate=net.config.intermediate_size, kv_groups=net.config.num_key_value_heads)
            row.update(time_against_dense(dense, net, args.reps, args.rounds))
            results[key] = row
            out_json.write_text(json.dumps(results, indent=2))
            write_table(results, args, out_json.with_suffix(".md"))
            print(key, row, flush=True)


def write_table(results, args, path: Path) -> None:
    dense = results["dense"]
    lines = [f"# Structured pruning (MLP channels and KV groups) of SmolLM2-135M-Instruct\n",
             f"Machine: {machine_name()}. Calibration: {args.nsamples} x {args.seqlen} tokens (seed 0, concatenated "
             f"local C4); WikiText-2 ppl over {'the whole test set' if not args.max_windows else f'the first {args.max_windows} windows'}"
             f" of {args.seqlen}. Speed: forward tokens/s, sequence 256, bf16, best of {args.reps} per round, dense and pruned "
             f"interleaved, speedup = median over rounds of the per-round ratio. Sparsity = share of each block's parameters removed: round(3 s) of SmolLM2's 3 KV groups "
             f"(query heads with their key/value head), MLP channels for the rest (embeddings and lm_head kept). Dense: ppl {dense['ppl']:.2f}, {dense['params'] / 1e6:.1f}M parameters. "
             "Methods: `magnitude` / `wanda` score channels (and KV groups) by the weight norm / activation-weighted "
             "norm of their down_proj (o_proj) columns; `+refit` adds the least-squares refit of the kept weights; "
             "`spap` is the penalty + alternating-minimisation solver. Command: `python validation/structured_speed.py"
             "` with the settings above. " + args.note + "\n",
             "| sparsity | method | ppl | parameters | MLP width | KV groups | speedup b=1 | speedup b=8 | prune s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if key == "dense":
            continue
        sp, m = key.split("/")
        lines.append(f"| {sp} | {m} | {r['ppl']:.2f} | {r['params'] / 1e6:.1f}M | {r['intermediate']} | {r['kv_groups']} | "
                     f"{r.get('speedup_b1', r['tps_b1'] / r['dense_tps_b1']):.2f}x | "
                     f"{r.get('speedup_b8', r['tps_b8'] / r['dense_tps_b8']):.2f}x | "
                     f"{r['prune_seconds']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
