"""Benchmark: solvers and one pipeline block at LLaMA-7B shapes (synthetic weights, real-shaped Gram).

Layers: W ~ N(0, 0.02^2) in the three LLaMA-7B linear shapes (4096x4096 attention, 11008x4096
gate/up, 4096x11008 down); G = X^T X from n calibration tokens whose channels have log-normal
scales (LLM activations have a few large channels), so G is as ill-conditioned as a real one.
Seconds per layer of each method at 50% per-row on the device (GPU when present).
Block: a 2-block LlamaForCausalLM with LLaMA-7B block shapes (hidden 4096, MLP 11008, 32 heads,
vocab 32000), random weights, pruned by the engine (`optprune.api.run_pruning`) from `--nsamples` x `--seqlen` random
tokens, with and without block offload: seconds and peak accelerator memory per block (CUDA),
peak host RSS otherwise.  Writes docs/results/llama7b_shapes_<device>.md (+ .json).
Usage: python validation/llama7b_shapes.py [--methods wanda,sparsegpt,...] [--block-method sparsegpt]
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from optprune import LayerProblem, Pattern, prune_layer
from optprune.parallel import machine_name

ROOT = Path(__file__).resolve().parents[1]
BLOCK = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)
SHAPES = {"attention 4096x4096": (4096, 4096), "gate/up 11008x4096": (11008, 4096), "down 4096x11008": (4096, 11008)}


def synthetic_problem(rows: int, cols: int, tokens: int, device, seed: int = 0) -> LayerProblem:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    W = 0.02 * torch.randn(rows, cols, generator=gen)
    scales = torch.exp(torch.randn(cols, generator=gen))
    G = torch.zeros(cols, cols, device=device)
    for s in range(0, tokens, 2048):
        X = (torch.randn(min(2048, tokens - s), cols, generator=gen) * scales).to(device)
        G += X.T @ X
    return LayerProblem(W.to(device), G, f"{rows}x{cols}")


def layer_seconds(methods: list[str], tokens: int, device) -> dict:
    out = {}
    for label, (rows, cols) in SHAPES.items():
        prob = synthetic_problem(rows, cols, tokens, device)
        for m in methods:
            res = prune_layer(prob, Pattern("per-row", 0.5), m)
            out[f"{label}/{m}"] = dict(seconds=res.seconds, rel_error=prob.relative_error(W_hat=res.weight))
            print(label, m, out[f"{label}/{m}"], flush=True)
        del prob
    return out


def block_run(method: str, nsamples: int, seqlen: int, device, offload: bool, work: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig

    cfg = LlamaConfig(**BLOCK, num_hidden_layers=2, max_position_embeddings=seqlen)
    torch.manual_seed(0)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    net = LlamaForCausalLM(cfg).to(dtype).eval()
    net.config.use_cache = False
    if not offload:
        net.to(device)
    windows = torch.randint(0, cfg.vocab_size, (nsamples, seqlen))
    t0 = time.perf_counter()
    config = PruneConfig(method=method, pattern="per-row", sparsity=0.5, device=str(device), offload=offload)
    report = run_pruning(net, windows, config, adapter_for(net), work, resume=False)
    peaks = [r["peak_accel_bytes"] for r in report["layers"] if r["peak_accel_bytes"] is not None]
    return dict(seconds=time.perf_counter() - t0, peak_accel_gib=max(peaks) / 2 ** 30 if peaks else None,
                peak_host_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                mean_rel_error=sum(r["rel_error"] for r in report["layers"]) / len(report["layers"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="magnitude,wanda,sparsegpt,sparsefw,sparseswaps,maiht")
    ap.add_argument("--tokens", type=int, default=16384, help="calibration tokens behind each synthetic Gram")
    ap.add_argument("--block-method", default="sparsegpt", help="'' skips the block runs")
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--note", default="", help="a sentence on the run conditions for the table")
    ap.add_argument("--tag", default="", help="table name suffix (default: gpu or cpu)")
    ap.add_argument("--results-dir", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--dry-run", action="store_true", help="shapes and block 64 times smaller (CI keeps it working)")
    args = ap.parse_args()
    if args.dry_run:
        SHAPES.update({k: (r // 64, c // 64) for k, (r, c) in SHAPES.items()})
        BLOCK.update(hidden_size=64, intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, vocab_size=500)
        args.tokens, args.nsamples, args.seqlen = 512, 2, 64
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tag = args.tag or ("gpu" if device.type == "cuda" else "cpu")
    result = dict(machine=machine_name(), settings=vars(args), layers=layer_seconds(args.methods.split(","),
                                                                                    args.tokens, device))
    if args.block_method:
        result["block"] = {f"offload={o}": block_run(args.block_method, args.nsamples, args.seqlen, device, o,
                                                      ROOT / "runs" / "llama7b_block")
                           for o in ((True, False) if device.type == "cuda" else (True,))}   # same thing on CPU
    out = Path(args.results_dir) / f"llama7b_shapes_{tag}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    methods = args.methods.split(",")
    lines = [f"# Solvers at LLaMA-7B shapes ({tag})\n",
             f"Machine: {result['machine']}. Synthetic W ~ N(0, 0.02²), Gram from {args.tokens} tokens with "
             "log-normal channel scales, 50% per-row, default options of each method. Command: "
             f"`python validation/llama7b_shapes.py --methods {args.methods} --block-method {args.block_method}"
             f"{' --tag ' + args.tag if args.tag else ''}`. "
             f"{args.note}\n",
             "| layer shape | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for label in SHAPES:
        lines.append(f"| {label} | " + " | ".join(f"{result['layers'][f'{label}/{m}']['seconds']:.2f} s" for m in methods) + " |")
    if "block" in result:
        lines += [f"\n## One LLaMA-7B-shaped block through the pipeline ({args.block_method}, "
                  f"{args.nsamples} x {args.seqlen} tokens, 2 blocks)\n",
                  "| offload | seconds | peak accelerator memory per block | peak host RSS | mean layer rel. error |",
                  "|---|---|---|---|---|"]
        for key, r in result["block"].items():
            accel = f"{r['peak_accel_gib']:.2f} GiB" if r["peak_accel_gib"] is not None else "n/a (CPU)"
            lines.append(f"| {key.split('=')[1]} | {r['seconds']:.0f} | {accel} | {r['peak_host_rss_gib']:.1f} GiB | "
                         f"{r['mean_rel_error']:.4g} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
