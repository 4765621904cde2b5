"""Command line: `optprune certify | report | prune | dump-layers | eval`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(text: str) -> list[int]:
    """--rows: distinct non-negative row indices, at least one."""
    try:
        rows = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--rows {text!r}: give row indices like 0,1") from None
    if not rows or min(rows) < 0 or len(set(rows)) != len(rows):
        raise ValueError(f"--rows {text!r}: give at least one row, each once, none negative")
    return rows


def layer_job(args):
    """Everything `certify` / `report` need, checked before any solve: (pattern, methods, rows, problems)."""
    from .config import resolve_device
    from .patterns import Pattern
    from .problem import load_layer_problems
    from .solvers.base import check_method

    if not args.layer:
        raise ValueError("give --layer FILE (a layer file from dump-layers), or --dense MODEL with --pruned/--masks")
    pattern = Pattern.parse(args.pattern, args.sparsity, default=0.5)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods or [""]:
        check_method(m, pattern)
    rows = _rows(args.rows)
    if args.window is not None and args.window < 1:
        raise ValueError(f"--window {args.window}: the sub-block needs at least one column")
    if args.workers < 1 or not args.time_limit > 0:
        raise ValueError("--workers must be >= 1 and --time-limit > 0")
    check_dnn_iters(args)
    device = resolve_device(args.device)
    problems = {n: p.to(device) for n, p in load_layer_problems(args.layer, args.name.split(",") if args.name
                                                               else None).items()}
    for problem in problems.values():
        problem.check_certifiable()
        problem.check_pattern(pattern)
        if max(rows) >= problem.shape[0]:
            raise ValueError(f"--rows {args.rows}: layer {problem.name} has rows 0..{problem.shape[0] - 1}")
    return pattern, methods, rows, problems


def _window(args, problem) -> int:
    """--window, or 24 columns (at most the layer's) when not given."""
    cols = problem.shape[1]
    if args.window is not None and args.window > cols:
        raise ValueError(f"--window {args.window} is wider than layer {problem.name} ({cols} columns)")
    return args.window if args.window is not None else min(24, cols)


def cmd_certify(args) -> int:
    from .compare import compare, run_methods
    from .parallel import init_from_env
    from .pipeline.output import check_writable_file

    if args.dense:
        from .pipeline.certify import certify_checkpoint_main
        check_dnn_iters(args)
        args.rows_list = _rows(args.rows)
        return certify_checkpoint_main(args)

    if args.json:
        check_writable_file(args.json, "--json")
    pattern, methods, rows, problems = layer_job(args)
    rank, _ = init_from_env()       # under torchrun the exact sub-block solves are shared by the ranks
    reports = []
    for name, problem in problems.items():
        results = run_methods(problem, pattern, methods)
        cmp = compare(problem, pattern, results, rows=rows, window_size=_window(args, problem),
                      exact_method=args.exact, time_limit=args.time_limit, workers=args.workers,
                      full_row_bounds=args.full_row_bounds, dnn_iters=args.dnn_iters)
        if rank == 0:
            print(cmp.to_markdown())
        reports.append(json.loads(cmp.to_json()))
    if args.json and rank == 0:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    return 0


def cmd_report(args) -> int:
    from .pipeline.output import check_writable
    from .report import layer_report

    check_writable(Path(args.out))
    pattern, methods, rows, problems = layer_job(args)
    for name, problem in problems.items():
        out = Path(args.out) / name if len(problems) > 1 else Path(args.out)
        path = layer_report(problem, pattern, methods, out, rows=rows, window_size=_window(args, problem),
                            exact_method=args.exact, time_limit=args.time_limit, workers=args.workers,
                            full_row_bounds=args.full_row_bounds, dnn_iters=args.dnn_iters)
        print(f"wrote {path}")
    return 0


def cmd_dump_layers(args) -> int:
    from .pipeline.run import dump_layers_main
    return dump_layers_main(args)


def cmd_prune(args) -> int:
    from .pipeline.run import prune_main
    return prune_main(args)


def cmd_eval(args) -> int:
    from .pipeline.run import eval_main
    return eval_main(args)


def check_dnn_iters(args) -> None:
    if args.dnn_iters < 0:
        raise ValueError(f"--dnn-iters {args.dnn_iters}: give the ADMM steps per row (0: no DNN bound)")


def _add_layer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default="", help="safetensors file with <name>.weight and <name>.gram (dump-layers)")
    p.add_argument("--name", default="", help="comma-separated layer names (default: all in the file)")
    p.add_argument("--method", default="magnitude,wanda,sparsegpt,sparsefw,sparseswaps,maiht")
    p.add_argument("--pattern", default="per-row", help="unstructured | per-row | N:M | structured")
    p.add_argument("--sparsity", type=float, default=None, help="default 0.5 (N:M implies its own)")
    p.add_argument("--rows", default="0", help="rows of the certified sub-block, e.g. 0,1")
    p.add_argument("--window", type=int, default=None, help="columns of the certified sub-block (default 24, "
                   "at most the layer's)")
    from .exact import EXACT_METHODS
    p.add_argument("--exact", default="milp", choices=sorted(EXACT_METHODS),
                   help="; ".join(f"{m.name}: {m.problem} problem, {m.statement}" for m in EXACT_METHODS.values()))
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1, help="local processes for the exact sub-block solves")
    p.add_argument("--full-row-bounds", action="store_true", help="also the rigorous full-row bounds: QCR (mask "
                   "only, every row, with a per-row gap histogram) and perspective (mask + refit, the --rows)")
    p.add_argument("--dnn-iters", type=int, default=0, help="also the DNN relaxation's rigorous bound on each of "
                   "the --rows (mask only), by this many ADMM steps per row (minutes per row on a CPU core; 0: off)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optprune", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_certify, _add_report, _add_prune, _add_dump_layers, _add_eval):
        add(sub)
    return p


def _add_certify(sub) -> None:
    """`optprune certify`: a layer file's masks, or a pruned checkpoint's against its dense model."""
    c = sub.add_parser("certify", help="compare methods' masks against certified optima on one layer file")
    _add_layer_args(c)
    c.add_argument("--json", default="", help="also write the report as JSON here")
    c.add_argument("--dense", default="", help="certify a pruned checkpoint's masks against this dense model "
                   "(instead of --layer)")
    c.add_argument("--pruned", default="", help="with --dense: the pruned checkpoint (any tool's); masks = its zeros")
    c.add_argument("--masks", default="", help="with --dense: a safetensors of keep masks '<block>.<linear>'")
    c.add_argument("--blocks", default="", help="with --dense: blocks to certify (default all)")
    c.add_argument("--neighbourhood", type=float, default=0.0, help="with --dense: seconds per row (of --rows) for "
                   "a neighbourhood certificate: the largest window of its most ambiguous decisions solved exactly")
    for flag, default in (("--calib", "c4"), ("--data-dir", "")):
        c.add_argument(flag, default=default)
    c.add_argument("--nsamples", type=int, default=32)
    c.add_argument("--seqlen", type=int, default=512)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_certify)


def _add_report(sub) -> None:
    """`optprune report`: the Markdown report with figures of a layer file."""
    rp = sub.add_parser("report", help="Markdown report with figures (progress, gaps, overlap, rows) for a layer file")
    _add_layer_args(rp)
    rp.add_argument("--out", required=True, help="folder for report.md and the PNG figures")
    rp.set_defaults(func=cmd_report)


def _add_prune(sub) -> None:
    """`optprune prune`: the model, pattern, calibration and output options."""
    pr = sub.add_parser("prune", help="prune a Hugging Face causal LM block by block")
    pr.add_argument("--model", default="", help="local path or hub id (default: embedded SmolLM2-135M)")
    pr.add_argument("--gguf-file", default="", help="GGUF file inside --model (or a path)")
    pr.add_argument("--method", default="sparseswaps")
    pr.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the method, e.g. --method-arg iters=50 (repeatable; checked against the "
                         "method's signature)")
    pr.add_argument("--sparsity", type=float, default=None, help="default 0.5 (N:M implies its own)")
    pr.add_argument("--pattern", default="per-row", help="unstructured | per-row | N:M | structured (MLP channels)")
    pr.add_argument("--calib", default="c4", help="c4 (shipped sample, or the data folder's) | wikitext2 | hf:NAME[:CONFIG] (needs the hub) | FILE (txt, jsonl, jsonl.gz)")
    pr.add_argument("--data-dir", default="", help="local data folder (shared/data layout)")
    pr.add_argument("--nsamples", type=int, default=128)
    pr.add_argument("--seqlen", type=int, default=2048)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 (forward passes)")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--out", required=True, help="output folder (never the input model's folder)")
    pr.add_argument("--save-format", default="dense",
                    help="dense: weights as they are + compressed-tensors sparsity metadata (plain from_pretrained "
                         "loads it); compressed: sparse-24-bitmask for 2:4, sparse-bitmask where smaller (load with "
                         "optprune.load_pretrained); plain: no metadata (default: dense)")
    pr.add_argument("--eval-ppl", action="store_true", help="also evaluate WikiText-2 perplexity")
    pr.add_argument("--no-resume", action="store_true")
    pr.add_argument("--max-memory", default="", help="RAM budget per activation buffer, e.g. 8GiB; larger ones "
                    "are memory-mapped on disk under --out")
    pr.add_argument("--attn-sparsity", type=float, default=None,
                    help="structured: share of KV groups of attention heads to remove, rounded down to whole "
                         "groups (0 keeps attention); the MLP then loses --sparsity of its channels. Default: "
                         "--sparsity is the share of each block's parameters removed, split between KV groups "
                         "(round(s x groups)) and MLP channels")
    pr.add_argument("--row-shards", type=int, default=1,
                    help="split each layer's rows into this many independent problems (per-row and N:M "
                         "patterns), spread over the torchrun ranks with the layers")
    pr.add_argument("--mmap-weights", action="store_true",
                    help="host RAM holds about one block: input safetensors stay memory-mapped and each pruned "
                         "block is read back from its saved state on disk")
    _add_objective_args(pr)
    _add_allocation_args(pr)
    pr.add_argument("--reconstruct", default="none", choices=["none", "block"],
                    help="block: after each block is pruned, fit its kept weights (masks fixed) to the dense "
                         "block's outputs by Adam; 1/8 of the windows held out, never worse than before")
    pr.add_argument("--reconstruct-epochs", type=int, default=2)
    pr.add_argument("--reconstruct-lr", type=float, default=1e-3)
    pr.add_argument("--layer-errors", action="store_true",
                    help="measure every layer's error even for a data-free method (magnitude), which then runs "
                         "the calibration passes it does not otherwise need")
    pr.set_defaults(func=cmd_prune)


def _add_objective_args(pr) -> None:
    """prune: what each layer minimises (refit, dense or pruned target, within-block sequential)."""
    pr.add_argument("--refit", action="store_true", help="least-squares refit of the kept weights after any method")
    pr.add_argument("--target", default="pruned", choices=["pruned", "dense"],
                    help="what each layer reproduces from the pruned model's inputs X_hat: its own output on them "
                         "(pruned: min ||W X_hat - W_hat X_hat||) or the dense model's output (dense: "
                         "min ||W X - W_hat X_hat||, which carries a second activation stream and implies "
                         "--sequential)")
    pr.add_argument("--target-ridge", type=float, default=0.3,
                    help="dense target: the corrected weights W* = W + (B - W G)(G + r mean(diag G) I)^-1 that "
                         "the methods prune are pulled towards W by this ridge r (less overfitting of the "
                         "calibration tokens)")
    pr.add_argument("--sequential", action="store_true",
                    help="within a block, prune input group after input group (q/k/v, o, gate/up, down), each "
                         "calibrated on the block with the earlier groups already pruned")


def _add_allocation_args(pr) -> None:
    """prune: the per-layer sparsities (uniform, OWL, the MILP and its pricing)."""
    pr.add_argument("--allocation", default="uniform", choices=["uniform", "owl", "milp"],
                    help="per-layer sparsities (unstructured, per-row): uniform; owl (outlier-weighted blocks, "
                         "luuyin/OWL); milp (a menu of sparsities per layer priced by each layer's error, the "
                         "choice with the least total error and exactly the uniform run's pruned count, proven "
                         "optimal by HiGHS)")
    pr.add_argument("--allocation-cost", default="error", choices=["error", "sensitivity", "loss"],
                    help="milp: price a layer by its relative error; by that error times its output energy "
                         "and the calibration loss's diagonal Fisher on its outputs (one backward pass); or by "
                         "its error curve scaled to the measured rise of the calibration loss when that layer "
                         "alone is pruned at the target (one forward pass per layer)")
    pr.add_argument("--allocation-spread", type=float, default=0.2, help="milp menu: sparsity +- spread")
    pr.add_argument("--allocation-step", type=float, default=0.025, help="milp menu step")
    pr.add_argument("--allocation-max", type=float, default=0.95, help="milp menu: most a layer may lose")
    pr.add_argument("--allocation-bound", action="append", default=[], metavar="SELECTOR=LO:HI",
                    help="milp: bound a group's sparsity (its pruned share of its weights), repeatable; SELECTOR "
                         "is attention, mlp or blocks:A-B, an empty LO is 0 and HI 1 (attention=:0.5)")
    pr.add_argument("--pricing-cache", default="", metavar="DIR",
                    help="keep the allocation's pricing pass in DIR and reuse it in any run that prices the same "
                         "model, windows, pattern and menu with the same method (e.g. --allocation-cost error, then "
                         "sensitivity; or without, then with --reconstruct block)")
    pr.add_argument("--allocation-windows", type=int, default=0,
                    help="price the allocation (owl, milp) on the first this many calibration windows "
                         "(0: all); the pruning itself uses every window")


def _add_dump_layers(sub) -> None:
    """`optprune dump-layers`: chosen blocks' layer problems to a safetensors file."""
    dl = sub.add_parser("dump-layers", help="write the layer problems (W, input Gram; with --target dense also the "
                        "cross term and the dense Gram) of chosen blocks to a safetensors file for certify/report")
    dl.add_argument("--model", default="", help="local path or hub id (default: embedded SmolLM2-135M)")
    dl.add_argument("--gguf-file", default="")
    dl.add_argument("--blocks", required=True, help="comma-separated block indices, e.g. 0,14,29")
    dl.add_argument("--out", required=True, help="the .safetensors file to write")
    dl.add_argument("--method", default="", help="prune the blocks before each wanted one with this method, so "
                    "the problems are those the pipeline solves (default: the dense model's)")
    dl.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE")
    dl.add_argument("--pattern", default="per-row")
    dl.add_argument("--sparsity", type=float, default=None)
    dl.add_argument("--target", default="pruned", choices=["pruned", "dense"])
    for flag, default in (("--calib", "c4"), ("--data-dir", ""), ("--dtype", "auto"), ("--device", "auto")):
        dl.add_argument(flag, default=default)
    dl.add_argument("--nsamples", type=int, default=128)
    dl.add_argument("--seqlen", type=int, default=2048)
    dl.add_argument("--seed", type=int, default=0)
    dl.set_defaults(func=cmd_dump_layers)


def _add_eval(sub) -> None:
    """`optprune eval`: perplexity and zero-shot accuracy of a saved model."""
    ev = sub.add_parser("eval", help="perplexity / zero-shot accuracy of a saved model")
    ev.add_argument("--model", default="", help="saved model folder (default: embedded SmolLM2-135M)")
    ev.add_argument("--gguf-file", default="")
    ev.add_argument("--ppl", default="wikitext2")
    ev.add_argument("--zeroshot", default="", help="comma list: arc_easy,arc_challenge,piqa,boolq,rte,...")
    ev.add_argument("--limit", type=int, default=0, help="at most this many items per zero-shot task (the first ones)")
    ev.add_argument("--zeroshot-scorer", default="auto",
                    help="harness: lm-evaluation-harness (HFLM on the model in memory, optprune[eval]); builtin: "
                         "optprune's scorer; auto: the harness when installed")
    ev.add_argument("--max-windows", type=int, default=0, help="at most this many ppl windows (0 = all)")
    ev.add_argument("--seqlen", type=int, default=2048)
    ev.add_argument("--data-dir", default="")
    ev.add_argument("--dtype", default="auto")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", default="")
    ev.set_defaults(func=cmd_eval)


def main(argv=None) -> int:
    """Exit 2 with one line when the input is wrong (arguments, paths, data that cannot be used:
    fix the command or the file); exit 1 with one line when the run fails (disk, solver, evaluation)."""
    from .result import ExactSolveError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"optprune: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ExactSolveError) as exc:
        print(f"optprune: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
