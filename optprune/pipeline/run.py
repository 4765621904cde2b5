"""`optprune prune` and `optprune eval`: the command line's wiring of loaders, API and output."""
from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..adapters import adapter_for
from ..api import calibration_for, evaluate, run_pruning
from ..config import PruneConfig, parse_method_args, resolve_device, resolve_dtype
from ..parallel import init_from_env
from .model_io import check_output_dir, load_model, save_model


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def config_from_args(args) -> PruneConfig:
    """Every prune setting, checked before the model is loaded."""
    return PruneConfig(method=args.method, method_options=parse_method_args(args.method_arg), pattern=args.pattern,
                       sparsity=args.sparsity, refit=args.refit, attn_sparsity=args.attn_sparsity, calib=args.calib,
                       nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, data_dir=args.data_dir,
                       dtype=args.dtype, device=args.device, max_memory=args.max_memory, row_shards=args.row_shards,
                       mmap_weights=args.mmap_weights, layer_errors=args.layer_errors)


def eval_ppl(net, tok, seqlen: int, data_dir: str = "", max_windows: int = 0, device: str = "auto") -> dict:
    n_blocks = len(adapter_for(net).blocks(net))
    with tqdm(total=n_blocks, desc="wikitext2 ppl (blocks)", file=sys.stderr, disable=None) as bar:
        return evaluate(net, tok, "wikitext2", seqlen, data_dir=data_dir, max_windows=max_windows, device=device,
                        progress=lambda b: bar.update(1))


def prune_main(args) -> int:
    config = config_from_args(args)
    rank, size = init_from_env()
    device = resolve_device(config.device)
    if device.type == "cuda" and size > 1:
        config = dataclasses.replace(config, device=f"cuda:{rank % torch.cuda.device_count()}")
    torch.manual_seed(config.seed)
    net, tok, source = load_model(args.model, args.gguf_file, resolve_dtype(config.dtype))
    adapter = adapter_for(net)
    out = Path(args.out)
    check_output_dir(out, source)
    t0 = time.perf_counter()
    windows = calibration_for(net, tok, adapter, config) if config.needs_calibration() else None
    with tqdm(total=len(adapter.blocks(net)), desc=f"prune {config.method}", file=sys.stderr,
              disable=None if rank == 0 else True) as bar:
        report = run_pruning(net, windows, config, adapter, out / ".resume", lambda b, s: bar.update(1),
                             resume=not args.no_resume)
    prune_seconds = time.perf_counter() - t0
    if rank != 0:          # rank 0 evaluates and writes; the others are done
        return 0
    summary = run_summary(net, source, config, report, prune_seconds, size, windows)
    if args.eval_ppl:
        summary["wikitext2"] = eval_ppl(net, tok, config.seqlen, config.data_dir, device=config.device)
        print(f"wikitext2 ppl {summary['wikitext2']['ppl']:.3f}")
    save_model(net, tok, out, source)
    (out / "optprune_report.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out / ".resume", ignore_errors=True)
    pattern = config.parsed_pattern()
    print(f"pruned with {config.method} ({pattern.name}, sparsity {pattern.sparsity:.2f}) in {prune_seconds:.0f}s; "
          + (f"mean layer rel. error {summary['mean_rel_error']:.4g}; " if windows is not None else "no calibration; ")
          + f"saved to {out}")
    return 0


def run_summary(net, source: str, config: PruneConfig, report: dict, prune_seconds: float, ranks: int,
                windows) -> dict:
    layers = report["layers"]
    pattern = config.parsed_pattern()
    return dict(model=source, adapter=report["adapter"], method=config.method,
                method_options=config.method_options, refit=config.refit, pattern=pattern.name,
                sparsity=pattern.sparsity, parameters=sum(p.numel() for p in net.parameters()),
                calib=config.calib, nsamples=config.nsamples, seqlen=config.seqlen, seed=config.seed,
                window_bos=bool(windows is not None and adapter_for(net).window_bos),
                dtype=str(resolve_dtype(config.dtype)), machine=machine_name(), ranks=ranks,
                row_shards=config.row_shards, prune_seconds=prune_seconds,
                mean_rel_error=mean_layer_error(layers),
                achieved_sparsity=sum(r["sparsity"] for r in layers) / max(len(layers), 1),
                breakdown=report.get("breakdown", {}), layers=layers)


def mean_layer_error(layers: list[dict]) -> float | None:
    """Mean relative layer error f(W_hat)/f(0) of a report; None when it was not measured (data-free)."""
    errors = [r["rel_error"] for r in layers if r["rel_error"] is not None]
    return sum(errors) / len(errors) if errors else None


def eval_main(args) -> int:
    dtype = resolve_dtype(args.dtype)
    resolve_device(args.device)
    net, tok, source = load_model(args.model, args.gguf_file, dtype)
    result = dict(model=source, machine=machine_name(), dtype=str(dtype))
    if args.ppl:
        result["wikitext2"] = eval_ppl(net, tok, args.seqlen, args.data_dir, args.max_windows, args.device)
        print(f"wikitext2 ppl {result['wikitext2']['ppl']:.3f} over {result['wikitext2']['windows']} windows")
    if args.zeroshot:
        from .zeroshot import evaluate_tasks
        net.to(resolve_device(args.device))
        result["zeroshot"] = evaluate_tasks(net, tok, args.zeroshot.split(","), args.data_dir, args.limit)
        for task, acc in result["zeroshot"].items():
            print(f"{task}: acc {acc['acc']:.4f} acc_norm {acc['acc_norm']:.4f} (n={acc['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
