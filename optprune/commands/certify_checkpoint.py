"""`optprune certify --dense MODEL --pruned CHECKPOINT`: certify masks made by any tool.

The masks are the zeros of the pruned checkpoint's target linears (or the booleans of `--masks FILE`, a
safetensors of keep masks named '<block>.<linear>', True = kept); each is checked against the claimed
pattern.  The layer problems are built from calibration windows on the dense model (W, G = X X^T of its
inputs).  By default every row of every layer is bounded (the whole-model certificate,
`optprune.commands.certify_model`); with `--subblocks` every layer gets instead its objective with the
checkpoint's weights and with the mask alone, its sub-block certificate (HiGHS) and the relaxation bound
(`optprune.compare`).  A layer whose mask breaks the pattern is reported as such and not certified.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..adapters import adapter_for
from ..api import calibration_for, check_blocks, dense_layer_problems
from ..compare import compare
from ..config import CalibrationSpec
from ..settings import from_args
from ..data import check_text_source
from ..patterns import Pattern, PatternError
from ..problem import LayerProblem
from ..result import PruneResult
from ..checkpoints import check_model_argument, check_writable_file, load_model


def checkpoint_masks(dense, pruned_path: str, masks_path: str = "", pattern: Pattern | None = None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'<block>.<linear>': (keep mask, the checkpoint's weights)} of every target linear of `dense`.  A
    checkpoint's mask is its nonzero weights, completed (`Pattern.complete`, with `pattern`) by entries zero
    in the dense model too: the dense model's own zeros (a quantised model's) are kept or pruned alike."""
    adapter = adapter_for(dense)
    if masks_path:
        from safetensors.torch import load_file
        masks = load_file(masks_path)
        out = {}
        for b, block in enumerate(adapter.blocks(dense)):
            for name, lin in adapter.targets(block).items():
                key = f"{b}.{name}"
                if key not in masks:
                    raise ValueError(f"--masks {masks_path} has no mask {key!r}")
                keep = masks[key]
                if keep.shape != lin.weight.shape:
                    turned = " (transposed: masks are out x in, as the weight)" if keep.shape == lin.weight.T.shape else ""
                    raise ValueError(f"--masks {masks_path}: mask {key!r} is {tuple(keep.shape)}, the layer's weight "
                                     f"{tuple(lin.weight.shape)}{turned}")
                if keep.dtype != torch.bool and not bool(((keep == 0) | (keep == 1)).all()):
                    raise ValueError(f"--masks {masks_path}: mask {key!r} holds values other than 0/1 (True = kept)")
                keep = keep.bool()
                out[key] = (keep, lin.weight.detach().float() * keep)
        return out
    pruned, _, _ = load_model(pruned_path, dtype=torch.float32)
    theirs = adapter_for(pruned)
    if type(pruned) is not type(dense) or len(theirs.blocks(pruned)) != len(adapter.blocks(dense)):
        raise ValueError(f"--pruned {pruned_path} is a {pruned.config.model_type} of {len(theirs.blocks(pruned))} "
                         f"blocks, the dense model a {dense.config.model_type} of {len(adapter.blocks(dense))}: "
                         "not pruned from it")
    pruned_blocks = theirs.blocks(pruned)
    out = {}
    for b, block in enumerate(adapter.blocks(dense)):
        for name, lin in adapter.targets(block).items():
            W = pruned_blocks[b].get_submodule(name).weight.detach().float()
            if W.shape != lin.weight.shape:
                raise ValueError(f"{b}.{name}: the pruned checkpoint's weight is {tuple(W.shape)}, the dense model's "
                                 f"{tuple(lin.weight.shape)}: not the same model")
            keep = W != 0
            if pattern is not None:
                keep = pattern.complete(keep, (W == 0) & (lin.weight.detach() == 0))
            out[f"{b}.{name}"] = (keep, W)
    return out


def certify_layer(key: str, problem: LayerProblem, pattern: Pattern, keep, weight, args) -> dict:
    """One layer's report: the pattern check, then objective, sub-block certificate and bound."""
    try:
        pattern.check(keep)
    except PatternError as exc:
        sparsity = float(1 - keep.float().mean())
        return dict(layer=key, pattern_ok=False, sparsity=sparsity, problem=str(exc))
    result = PruneResult(keep, weight, "checkpoint")
    cmp = compare(problem, pattern, {"checkpoint": result}, rows=args.rows_list, window_size=args.window or 24,
                  exact_method=args.exact, time_limit=args.time_limit, workers=args.workers,
                  full_row_bounds=getattr(args, "full_row_bounds", False), dnn_iters=getattr(args, "dnn_iters", 0))
    report = dict(json.loads(cmp.to_json()), layer=key, pattern_ok=True, sparsity=float(1 - keep.float().mean()),
                  markdown=cmp.to_markdown(), worse_than_zero=cmp.methods[0].rel_error > 1.0)
    if getattr(args, "neighbourhood", 0) > 0:
        report["neighbourhood"] = neighbourhoods(problem, pattern, keep, args.rows_list, args.neighbourhood)
        report["markdown"] += "".join(f"\n- {n['statement']} ({n['seconds']:.1f} s)" for n in report["neighbourhood"]) + "\n"
    return report


def neighbourhoods(problem: LayerProblem, pattern: Pattern, keep, rows, seconds: float) -> list[dict]:
    """Each row's neighbourhood certificate (`optprune.exact.neighbourhood.certify_rows`): the largest window
    of its most ambiguous decisions solved exactly within `seconds`, or the better mask found there."""
    from ..exact.neighbourhood import certify_rows

    found = {c.row: c for c in certify_rows(problem, pattern, keep, rows, time_budget=seconds)}
    return [dict(row=r, size=len(c.positions), certified=c.certified, improved=c.improved_mask is not None,
                 value=c.value, original_value=c.original_value, optimum=c.optimum, lower_bound=c.lower_bound,
                 status=c.status, seconds=c.seconds, statement=c.statement()) if (c := found.get(r)) is not None else
            dict(row=r, size=0, certified=False, improved=False, status="time limit", seconds=seconds,
                 statement=f"row {r}: no window finished within {seconds:g} s")
            for r in rows]


def check_subblock(dense, adapter, blocks: list[int], rows: list[int], window: int) -> None:
    """--rows and --window must fit every layer to certify (the smallest named), before any calibration."""
    shapes = {f"{b}.{name}": tuple(lin.weight.shape) for b in blocks
              for name, lin in adapter.targets(adapter.blocks(dense)[b]).items()}
    fewest_rows = min(shapes, key=lambda k: shapes[k][0])
    if rows and (min(rows) < 0 or max(rows) >= shapes[fewest_rows][0]):
        raise ValueError(f"--rows {','.join(map(str, rows))}: layer {fewest_rows} has {shapes[fewest_rows][0]} rows "
                         f"(0..{shapes[fewest_rows][0] - 1})")
    fewest_cols = min(shapes, key=lambda k: shapes[k][1])
    if window and not 1 <= window <= shapes[fewest_cols][1]:
        raise ValueError(f"--window {window}: layer {fewest_cols} has {shapes[fewest_cols][1]} columns")


def certify_checkpoint_main(args) -> int:
    """`args.rows_list`: the sub-block rows, parsed by the CLI."""
    pattern = Pattern.parse(args.pattern, args.sparsity, default=0.5)
    if not args.pruned and not args.masks:
        raise ValueError("--dense needs --pruned CHECKPOINT or --masks FILE (the masks to certify)")
    for path, flag in ((args.pruned, "--pruned"), (args.masks, "--masks")):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    if args.json:
        check_writable_file(args.json, "--json")
    config = from_args(CalibrationSpec, args)
    check_text_source(config.calib, config.data_dir)
    check_model_argument(args.dense, "")
    dense, tok, _ = load_model(args.dense, "", torch.float32, config.seqlen)
    adapter = adapter_for(dense)
    blocks = [int(b) for b in args.blocks.split(",")] if args.blocks else list(range(len(adapter.blocks(dense))))
    check_blocks(dense, adapter, blocks)
    check_subblock(dense, adapter, blocks, args.rows_list, args.window)
    masks = checkpoint_masks(dense, args.pruned, args.masks, pattern)
    if not args.subblocks:
        return certify_whole_model(args, dense, tok, adapter, blocks, masks, config, pattern)
    problems = dense_layer_problems(dense, calibration_for(dense, tok, adapter, config), blocks, "cpu")
    reports = []
    for key, (W, G) in problems.items():
        report = certify_layer(key, LayerProblem(W, G, key), pattern, *masks[key], args)
        print(report.get("markdown") or f"layer `{key}`: the mask is not {pattern.name} ({report['problem']}): "
              "not certified\n")
        reports.append({k: v for k, v in report.items() if k != "markdown"})
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    return verdict(reports, pattern, args.dense)


def certify_whole_model(args, dense, tok, adapter, blocks, masks, config, pattern: Pattern) -> int:
    """Every row of every layer of `blocks` bounded (`certify_model`), one block's Grams at a time, resumed from
    `<json>.partial`; prints the tables, writes the JSON, and returns the verdict's exit status."""
    from ..config import resolve_device
    from ..engine import Engine, model_digest, windows_digest
    from ..progress import BlockProgress
    from .certify_model import certify_layers, finished_layers, fingerprint, markdown, model_summary

    windows = calibration_for(dense, tok, adapter, config)
    print_ = fingerprint(model_digest(dense), masks, windows_digest(windows), pattern, args.bound, args.bound_iters)
    partial = Path(args.json + ".partial") if args.json else None
    done = finished_layers(partial, print_) if partial else {}
    keys = {b: [f"{b}.{name}" for name in adapter.targets(adapter.blocks(dense)[b])] for b in blocks}
    todo = [b for b in blocks if any(k not in done for k in keys[b])]
    layers: dict[str, dict] = {k: done[k] for b in blocks for k in keys[b] if k in done}
    progress = BlockProgress(f"certify ({args.bound} bound, every row)", sum(len(keys[b]) for b in blocks),
                             unit="layer")
    progress.done = len(layers)                 # a resumed run counts on from the layers it reads back

    def visit(b, block, grams):
        problems = {k: (lin.weight.detach().float().cpu(), grams[name].cpu())
                    for (name, lin), k in zip(adapter.targets(block).items(), keys[b])}
        layers.update({r["layer"]: r for r in certify_layers(problems, masks, pattern, args.bound, args.bound_iters,
                                                              partial, print_, layers, progress)})

    if todo:
        Engine(dense, adapter, resolve_device(args.device), 8).each_dense_block(windows, visit, todo)
    reports = [layers[k] for b in blocks for k in keys[b]]
    summary = model_summary(reports)
    print(markdown(reports, summary, f"Whole-model certificate of {args.pruned or args.masks} against "
                                     f"{args.dense or 'the embedded model'}: {pattern.name}, {len(reports)} layers, "
                                     f"the {args.bound} bound on every row."))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(summary=summary, layers=reports, fingerprint=print_), indent=2))
    return verdict(reports, pattern, args.dense)


def verdict(reports: list[dict], pattern: Pattern, dense: str) -> int:
    """0 when every layer was certified; a line and exit 1 for the layers whose mask breaks the claimed pattern
    (exit 2 when none holds it: the claim is wrong); a warning when the checkpoint's weights err more than all
    zeros would (relative error > 1: not a pruning of the --dense model)."""
    foreign = [r["layer"] for r in reports if r.get("worse_than_zero")]
    if foreign:
        print(f"optprune: warning: {len(foreign)} layer(s) of the checkpoint err more than all-zero weights would "
              f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): was it pruned from --dense {dense}?",
              file=sys.stderr)
    broken = [r["layer"] for r in reports if not r["pattern_ok"]]
    if broken and len(broken) == len(reports):
        raise ValueError(f"no layer's mask is {pattern.name} ({reports[0]['problem']}): claim the pattern the "
                         "checkpoint was pruned to (--pattern, --sparsity)")
    if broken:
        print(f"{len(broken)} layer(s) break the claimed {pattern.name} pattern: {', '.join(broken)}")
        return 1
    return 0
