"""`optprune certify` and `optprune report` on a layer file (or, with --dense, on a pruned checkpoint)."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import check_writable, check_writable_file
from ..compare import compare, run_methods
from ..config import resolve_device
from ..parallel import init_from_env
from ..patterns import Pattern
from ..problem import load_layer_problems
from ..report import layer_report
from ..solvers.base import check_method
from .certify_checkpoint import certify_checkpoint_main


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
    if args.dense:
        check_dnn_iters(args)
        check_whole_model_args(args)
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
    check_writable(Path(args.out))
    pattern, methods, rows, problems = layer_job(args)
    for name, problem in problems.items():
        out = Path(args.out) / name if len(problems) > 1 else Path(args.out)
        path = layer_report(problem, pattern, methods, out, rows=rows, window_size=_window(args, problem),
                            exact_method=args.exact, time_limit=args.time_limit, workers=args.workers,
                            full_row_bounds=args.full_row_bounds, dnn_iters=args.dnn_iters)
        print(f"wrote {path}")
    return 0


def check_whole_model_args(args) -> None:
    """The sub-block options belong to `--subblocks`; the whole-model certificate takes --bound-iters >= 1."""
    asked = [flag for flag, on in (("--full-row-bounds", args.full_row_bounds), ("--dnn-iters", args.dnn_iters > 0),
                                   ("--neighbourhood", args.neighbourhood > 0)) if on]
    if asked and not args.subblocks:
        raise ValueError(f"{', '.join(asked)}: options of the sub-block certificates; add --subblocks (the default "
                         "--dense certificate bounds every row of every layer)")
    if args.bound_iters < 1:
        raise ValueError(f"--bound-iters {args.bound_iters}: give at least 1 step")


def check_dnn_iters(args) -> None:
    if args.dnn_iters < 0:
        raise ValueError(f"--dnn-iters {args.dnn_iters}: give the ADMM steps per row (0: no DNN bound)")
