"""`optprune prune` and `optprune eval`: the command line's wiring of loaders, API and output."""
from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ..adapters import adapter_for
from ..api import calibration_for, evaluate, pruner_for, run_pruning
from ..config import CalibrationSpec, PlacementSpec, PruneConfig, resolve_device, resolve_dtype
from ..settings import from_args
from ..parallel import init_from_env
from ..data import check_text_source, describe_source
from .model_io import check_model_argument, load_model, model_source
from .output import OutputFolder, check_writable_file
from ..allocation import plot_allocation
from .checkpoint import SAVE_FORMATS
from .harness import check_zeroshot, evaluate_zeroshot
from .progress import BlockProgress


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {threads} thread{'s' if threads != 1 else ''}"


def eval_ppl(net, tok, seqlen: int, data_dir: str = "", max_windows: int = 0, device: str = "auto") -> dict:
    bar = BlockProgress("wikitext2 ppl", len(adapter_for(net).blocks(net)))
    return evaluate(net, tok, "wikitext2", seqlen, data_dir=data_dir, max_windows=max_windows, device=device,
                    progress=bar.update)


def check_prune_inputs(args, config: PruneConfig) -> tuple[OutputFolder, bool]:
    """Every check that needs no model: data, model path, output folder (and its resume state).
    Returns the folder and whether it already holds this run's finished output."""
    if args.save_format not in SAVE_FORMATS:
        raise ValueError(f"--save-format {args.save_format!r}: choose from {', '.join(SAVE_FORMATS)}")
    if config.needs_calibration():
        check_text_source(config.calib, config.data_dir)
    if args.eval_ppl:
        check_text_source("wikitext2", config.data_dir, test=True)
    check_model_argument(args.model, args.gguf_file)
    folder = OutputFolder(args.out, model_source(args.model, args.gguf_file))
    settings = dict(config.result_settings(), model=folder.source)
    return folder, folder.check(settings, resume=not args.no_resume)


def prune_main(args) -> int:
    config = from_args(PruneConfig, args)
    folder, finished = check_prune_inputs(args, config)
    if finished and not args.no_resume:
        print(f"{folder.path} already holds this run's finished output: nothing to do")
        return 0
    rank, size = init_from_env()
    if resolve_device(config.device).type == "cuda" and size > 1:
        config = dataclasses.replace(config, device=f"cuda:{rank % torch.cuda.device_count()}")
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    net, tok, source = load_model(args.model, args.gguf_file, resolve_dtype(config.dtype), config.seqlen,
                                  check_skeleton=lambda skeleton: pruner_for(skeleton, config).check_fits(skeleton))
    adapter = adapter_for(net)
    if rank == 0:
        folder.begin()
        print(f"loaded {source} ({adapter.model_type}, {len(adapter.blocks(net))} blocks) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    windows = calibration_for(net, tok, adapter, config) if config.needs_calibration() else None
    if rank == 0 and windows is not None:
        print(f"calibration: {len(windows)} windows x {windows.shape[1]} tokens from "
              f"{describe_source(config.calib, config.data_dir)}", file=sys.stderr, flush=True)
    bar = BlockProgress(f"prune {config.method}", len(adapter.blocks(net)), enabled=rank == 0)
    pricing = BlockProgress(f"price the {config.allocation} allocation", len(adapter.blocks(net)), enabled=rank == 0,
                            then=bar.restart)
    report = run_pruning(net, windows, config, adapter, folder.resume_dir, bar.update,
                         resume=not args.no_resume, identity={"model": source}, say=bar.note,
                         pricing_progress=pricing.update)
    if rank != 0:          # rank 0 writes and evaluates; the others are done
        return 0
    prune_seconds = sum(report.get("sessions", [0.0])[:-1]) + time.perf_counter() - t0
    summary = run_summary(net, source, config, report, prune_seconds, size, windows)
    folder.save(net, tok, summary, report["fingerprint"], args.save_format)
    if summary["allocation"] and plot_allocation(summary["allocation"], summary["sparsity"], folder.path / "allocation.png"):
        print(f"allocation per block: {folder.path / 'allocation.png'}", file=sys.stderr)
    print(f"pruned with {config.method} ({summary['pattern']}, sparsity {summary['sparsity']:.2f}) in "
          f"{prune_seconds:.0f}s; " + (f"mean layer rel. error {summary['mean_rel_error']:.4g}; "
                                       if windows is not None else "no calibration; ") + f"saved to {folder.path}")
    return evaluate_saved(folder, net, tok, config, summary) if args.eval_ppl else 0


def evaluate_saved(folder: OutputFolder, net, tok, config: PruneConfig, summary: dict) -> int:
    """--eval-ppl after the save: a failure costs the evaluation, never the pruned model."""
    try:
        summary["wikitext2"] = eval_ppl(net, tok, config.seqlen, config.data_dir, device=config.device)
    except Exception as exc:       # noqa: BLE001 - any failure: the model is saved, say so and exit 1
        print(f"optprune: failed: evaluation stopped ({type(exc).__name__}: {exc}); the pruned model is saved "
              f"in {folder.path}: evaluate it with `optprune eval --model {folder.path}`", file=sys.stderr)
        return 1
    folder.update_report(summary)
    print(f"wikitext2 ppl {summary['wikitext2']['ppl']:.3f}")
    return 0


def run_summary(net, source: str, config: PruneConfig, report: dict, prune_seconds: float, ranks: int,
                windows) -> dict:
    """The report: the settings (flat, and by spec under `settings`), what the run measured and where it ran."""
    layers = report["layers"]
    settings = config.result_settings()
    return dict(model=source, adapter=report["adapter"], **{k: v for k, v in settings.items() if k != "allocation"},
                settings=config.specs(), reconstruction=report.get("reconstruction"),
                allocation=report.get("allocation"), parameters=sum(p.numel() for p in net.parameters()),
                window_bos=bool(windows is not None and adapter_for(net).window_bos),
                machine=machine_name(), ranks=ranks, prune_seconds=prune_seconds, sessions=report.get("sessions"),
                mean_rel_error=mean_layer_error(layers),
                achieved_sparsity=sum(r["sparsity"] for r in layers) / max(len(layers), 1),
                breakdown=report.get("breakdown", {}), layers=layers)


def mean_layer_error(layers: list[dict]) -> float | None:
    """Mean relative layer error f(W_hat)/f(0) of a report; None when it was not measured (data-free)."""
    errors = [r["rel_error"] for r in layers if r["rel_error"] is not None]
    return sum(errors) / len(errors) if errors else None


@dataclasses.dataclass(frozen=True)
class DumpSpec(PlacementSpec, CalibrationSpec):
    """What the dense model's layer problems depend on: calibration and placement."""


def dump_layers_main(args) -> int:
    """`optprune dump-layers`: every check first, then one walk up to the last wanted block."""
    from ..api import check_blocks, dense_layer_problems, pruned_layer_problems
    from ..problem import save_layer_problems

    try:
        blocks = sorted({int(b) for b in args.blocks.split(",") if b.strip()})
    except ValueError:
        raise ValueError(f"--blocks {args.blocks!r}: give block indices like 0,14,29") from None
    if args.target == "dense" and not args.method:
        raise ValueError("--target dense needs --method: the dense target differs from the dense model's problem "
                         "only once earlier blocks are pruned")
    config = from_args(PruneConfig if args.method else DumpSpec, args)
    if not str(args.out).endswith(".safetensors"):
        raise ValueError(f"--out {args.out}: name a .safetensors file")
    check_writable_file(args.out, "--out")
    check_text_source(config.calib, config.data_dir)
    check_model_argument(args.model, args.gguf_file)
    net, tok, source = load_model(args.model, args.gguf_file, resolve_dtype(config.dtype), config.seqlen,
                                  check_skeleton=lambda skeleton: check_blocks(skeleton, adapter_for(skeleton), blocks))
    windows = calibration_for(net, tok, adapter_for(net), config)
    problems = (pruned_layer_problems(net, windows, blocks, config) if args.method else
                dense_layer_problems(net, windows, blocks, config.device, config.batch))
    save_layer_problems(problems, args.out, dict(model=source, blocks=blocks, calib=config.calib,
                                                 nsamples=config.nsamples, seqlen=config.seqlen, seed=config.seed,
                                                 method=args.method or "none (dense model)", target=args.target))
    print(f"wrote {len(problems)} layer problems of blocks {blocks} to {args.out}")
    return 0


def eval_main(args) -> int:
    window, place = from_args(CalibrationSpec, args), from_args(PlacementSpec, args)
    dtype = resolve_dtype(place.dtype)
    if args.json:
        check_writable_file(args.json, "--json")
    if args.ppl not in ("", "wikitext2"):
        raise ValueError(f"--ppl {args.ppl}: the perplexity set is wikitext2 (or \"\" for none)")
    if args.ppl:
        check_text_source("wikitext2", window.data_dir, test=True)
    if args.limit < 0 or args.max_windows < 0:
        raise ValueError("--limit and --max-windows must be >= 0")
    tasks = [t for t in args.zeroshot.split(",") if t]
    if tasks:
        check_zeroshot(tasks, window.data_dir, args.zeroshot_scorer)
    net, tok, source = load_model(args.model, args.gguf_file, dtype, window.seqlen if args.ppl else 0)
    result = dict(model=source, machine=machine_name(), dtype=str(dtype))
    if args.ppl:
        result["wikitext2"] = eval_ppl(net, tok, window.seqlen, window.data_dir, args.max_windows, place.device)
        print(f"wikitext2 ppl {result['wikitext2']['ppl']:.3f} over {result['wikitext2']['windows']} windows")
    if args.zeroshot:
        net.to(resolve_device(place.device))
        result["zeroshot"] = evaluate_zeroshot(net, tok, tasks, window.data_dir, args.limit, args.zeroshot_scorer)
        print(f"zero-shot scorer: {result['zeroshot']['scorer']}")
        for task, acc in result["zeroshot"]["tasks"].items():
            norm = "" if acc["acc_norm"] is None else f" acc_norm {acc['acc_norm']:.4f}"
            print(f"{task}: acc {acc['acc']:.4f}{norm} (n={acc['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
