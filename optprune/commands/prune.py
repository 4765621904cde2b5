"""`optprune prune`: every check, the model, the API's run, the output folder, the evaluation."""
from __future__ import annotations

import dataclasses
import shlex
import sys
import time
import torch

from ..adapters import adapter_for
from ..allocation import plot_allocation
from ..api import calibration_for, mean_layer_error, pruner_for, run_pruning
from ..checkpoints import OutputFolder, check_save_format, check_model_argument, load_model, model_source
from ..config import PruneConfig, placement_note, resolve_device, resolve_dtype
from ..data import check_text_source, describe_source, distinct_windows
from ..evaluation import wikitext2_perplexity
from ..parallel import init_from_env, machine_name
from ..progress import BlockProgress
from ..recipes import recipe_of, with_recipe
from ..settings import from_args


def check_prune_inputs(args, config: PruneConfig) -> tuple[OutputFolder, bool]:
    """Every check that needs no model: data, model path, output folder (and its resume state).
    Returns the folder and whether it already holds this run's finished output."""
    check_save_format(args.save_format)
    if config.needs_calibration():
        check_text_source(config.calib, config.data_dir)
    if args.eval_ppl:
        check_text_source("wikitext2", config.data_dir, test=True)
    check_model_argument(args.model, args.gguf_file)
    folder = OutputFolder(args.out, model_source(args.model, args.gguf_file))
    settings = dict(config.result_settings(), model=folder.source)
    return folder, folder.check(settings, resume=not args.no_resume)


def config_of(args) -> PruneConfig:
    """The run's settings: the flags, over the recipe's when --recipe names one, over the defaults."""
    config = from_args(PruneConfig, args)
    if not args.recipe:
        return config
    from .cli import explicit_settings
    given = explicit_settings(args.argv)
    explicit = {k: getattr(config, k) for k in given if hasattr(config, k)}
    return dataclasses.replace(config, **with_recipe(args.recipe, explicit))


def prune_main(args) -> int:
    config = config_of(args)
    folder, finished = check_prune_inputs(args, config)
    rank, size = init_from_env()
    with folder.locked(enabled=rank == 0):            # a second run on the same --out is refused at once
        if finished and not args.no_resume:
            return finish_again(folder, args, config)
        return prune_into(folder, args, config, rank, size)


def finish_again(folder: OutputFolder, args, config: PruneConfig) -> int:
    """This run's finished output again: nothing to prune; with --eval-ppl and no perplexity in its report,
    the saved model is evaluated."""
    summary = folder.report()
    if not args.eval_ppl or summary.get("wikitext2"):
        print(f"{folder.path} already holds this run's finished output: nothing to do")
        return 0
    net, tok, _ = load_model(str(folder.path), dtype=resolve_dtype(config.dtype), seqlen=config.seqlen)
    return evaluate_saved(folder, net, tok, config, summary)


def prune_into(folder: OutputFolder, args, config: PruneConfig, rank: int, size: int) -> int:
    """Load, calibrate, prune (resuming what `folder` holds of this run), save; rank 0 writes and evaluates."""
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
              f"{time.perf_counter() - t0:.0f} s; "
              + placement_note(next(net.parameters()).dtype, resolve_device(config.device)), file=sys.stderr, flush=True)
    windows = calibration_for(net, tok, adapter, config) if config.needs_calibration() else None
    if rank == 0 and windows is not None:
        distinct = distinct_windows(windows)
        print(f"calibration: {len(windows)} windows" + (f" ({distinct} distinct)" if distinct < len(windows) else "")
              + f" x {windows.shape[1]} tokens from {describe_source(config.calib, config.data_dir)}",
              file=sys.stderr, flush=True)
    bar = BlockProgress(f"prune {config.method}", len(adapter.blocks(net)), enabled=rank == 0)
    pricing = BlockProgress(f"price the {config.allocation} allocation", len(adapter.blocks(net)), enabled=rank == 0,
                            then=bar.restart)
    report = run_pruning(net, windows, config, adapter, folder.resume_dir, bar.update,
                         resume=not args.no_resume, identity={"model": source}, say=bar.note,
                         pricing_progress=pricing.update)
    if rank != 0:          # rank 0 writes and evaluates; the others are done
        return 0
    prune_seconds = sum(report.get("sessions", [0.0])[:-1]) + time.perf_counter() - t0
    summary = run_summary(net, source, config, report, prune_seconds, size, windows,
                          "optprune " + shlex.join(getattr(args, "argv", [])))
    folder.save(net, tok, summary, report["fingerprint"], args.save_format)
    if summary["allocation"] and plot_allocation(summary["allocation"], summary["sparsity"], folder.path / "allocation.png"):
        print(f"allocation per block: {folder.path / 'allocation.png'}", file=sys.stderr)
    print(f"pruned with {config.method} ({summary['pattern']}; {summary['achieved_sparsity']:.4f} of the pruned "
          f"layers' weights zero or removed) in {prune_seconds:.0f}s; "
          + (f"mean layer rel. error {summary['mean_rel_error']:.4g}; " if windows is not None else "no calibration; ")
          + f"saved to {folder.path}")
    return evaluate_saved(folder, net, tok, config, summary) if args.eval_ppl else 0


def evaluate_saved(folder: OutputFolder, net, tok, config: PruneConfig, summary: dict) -> int:
    """--eval-ppl after the save: a failure costs the evaluation, never the pruned model."""
    try:
        summary["wikitext2"] = wikitext2_perplexity(net, tok, config.seqlen, config.data_dir,
                                                  device=config.device)
    except Exception as exc:       # noqa: BLE001 - any failure: the model is saved, say so and exit 1
        print(f"optprune: failed: evaluation stopped ({type(exc).__name__}: {exc}); the pruned model is saved "
              f"in {folder.path}: evaluate it with `optprune eval --model {folder.path}`", file=sys.stderr)
        return 1
    folder.update_report(summary)
    print(f"wikitext2 ppl {summary['wikitext2']['ppl']:.3f}")
    return 0


def run_summary(net, source: str, config: PruneConfig, report: dict, prune_seconds: float, ranks: int,
                windows, command: str = "") -> dict:
    """The report: the settings (flat, and by spec under `settings`), what the run measured and where it ran."""
    layers = report["layers"]
    settings = config.result_settings()
    return dict(model=source, adapter=report["adapter"], **{k: v for k, v in settings.items() if k != "allocation"},
                settings=config.specs(), reconstruction=report.get("reconstruction"),
                allocation=report.get("allocation"), parameters=sum(p.numel() for p in net.parameters()),
                window_bos=bool(windows is not None and adapter_for(net).window_bos),
                machine=machine_name(), ranks=ranks, prune_seconds=prune_seconds, sessions=report.get("sessions"),
                mean_rel_error=mean_layer_error(layers), calibrated=report["calibrated"],
                achieved_sparsity=report["achieved_sparsity"], layer_sparsity=report["layer_sparsity"],
                command=command, recipe=recipe_of(config),
                breakdown=report.get("breakdown", {}), layers=layers)
