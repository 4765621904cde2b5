"""`optprune prune` and `optprune eval`: wiring of loaders, pipeline and evaluator."""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..parallel import init_from_env
from ..patterns import Pattern
from .activations import parse_memory
from .data import calibration_windows, tokenize_long, wikitext_test_text
from .evaluate import perplexity
from .model_io import check_output_dir, decoder_layers, load_model, resolve_dtype, save_model
from .sequential import mean_layer_error, needs_calibration, prune_sequential


def _device(name: str) -> torch.device:
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def eval_ppl(net, tok, seqlen: int, data_dir: str = "", max_windows: int = 0) -> dict:
    ids = tokenize_long(tok, wikitext_test_text(data_dir))
    n = len(ids) // seqlen if not max_windows else min(max_windows, len(ids) // seqlen)
    with tqdm(total=n, desc="wikitext2 ppl", file=sys.stderr, disable=None) as bar:
        return perplexity(net, ids, seqlen, max_windows=max_windows, progress=bar.update)


def prune_main(args) -> int:
    pattern = Pattern.parse(args.pattern, args.sparsity)
    rank, size = init_from_env()
    device, dtype = _device(args.device), resolve_dtype(args.dtype)
    if device.type == "cuda" and size > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.manual_seed(args.seed)
    net, tok, source = load_model(args.model, args.gguf_file, dtype)
    out = Path(args.out)
    check_output_dir(out, source)
    t0 = time.perf_counter()
    windows = (calibration_windows(tok, args.calib, args.nsamples, args.seqlen, args.seed, args.data_dir)
               if needs_calibration(args.method, pattern, args.refit, args.layer_errors) else None)
    if device.type != "cpu":   # offload: only embeddings/norm/head and one block on the accelerator
        net.model.embed_tokens.to(device)
        if hasattr(net.model, "rotary_emb"):
            net.model.rotary_emb.to(device)
    n_blocks = len(decoder_layers(net))
    with tqdm(total=n_blocks, desc=f"prune {args.method}", file=sys.stderr, disable=None if rank == 0 else True) as bar:
        report = prune_sequential(net, windows, args.method, pattern, out, device=device,
                                  resume=not args.no_resume, progress=lambda b, s: bar.update(1),
                                  offload=device.type != "cpu", refit=args.refit,
                                  max_memory=parse_memory(args.max_memory), attn_sparsity=args.attn_sparsity,
                                  row_shards=args.row_shards, mmap_weights=args.mmap_weights,
                                  layer_errors=args.layer_errors)
    prune_seconds = time.perf_counter() - t0
    if rank != 0:          # rank 0 evaluates and writes; the others are done
        return 0
    if device.type != "cpu":
        net.to(device)
    layers = report["layers"]
    summary = dict(model=source, method=args.method, refit=args.refit, pattern=pattern.name,
                   sparsity=pattern.sparsity, parameters=sum(p.numel() for p in net.parameters()),
                   calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed,
                   dtype=str(dtype), machine=machine_name(), ranks=size, row_shards=args.row_shards,
                   prune_seconds=prune_seconds,
                   mean_rel_error=mean_layer_error(layers),
                   achieved_sparsity=sum(r["sparsity"] for r in layers) / max(len(layers), 1),
                   layers=layers)
    if args.eval_ppl:
        summary["wikitext2"] = eval_ppl(net, tok, args.seqlen, args.data_dir)
        print(f"wikitext2 ppl {summary['wikitext2']['ppl']:.3f}")
    save_model(net, tok, out, source)
    (out / "optprune_report.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out / ".resume", ignore_errors=True)
    print(f"pruned with {args.method} ({pattern.name}, sparsity {pattern.sparsity:.2f}) in {prune_seconds:.0f}s; "
          + (f"mean layer rel. error {summary['mean_rel_error']:.4g}; " if windows is not None else "no calibration; ")
          + f"saved to {out}")
    return 0


def eval_main(args) -> int:
    device, dtype = _device(args.device), resolve_dtype(args.dtype)
    net, tok, source = load_model(args.model, args.gguf_file, dtype)
    net.to(device)
    result = dict(model=source, machine=machine_name(), dtype=str(dtype))
    if args.ppl:
        if args.ppl != "wikitext2":
            raise ValueError(f"unknown perplexity set {args.ppl!r}: use wikitext2")
        result["wikitext2"] = eval_ppl(net, tok, args.seqlen, args.data_dir, args.max_windows)
        print(f"wikitext2 ppl {result['wikitext2']['ppl']:.3f} over {result['wikitext2']['windows']} windows")
    if args.zeroshot:
        from .zeroshot import evaluate_tasks
        result["zeroshot"] = evaluate_tasks(net, tok, args.zeroshot.split(","), args.data_dir, args.limit)
        for task, acc in result["zeroshot"].items():
            print(f"{task}: acc {acc['acc']:.4f} acc_norm {acc['acc_norm']:.4f} (n={acc['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
