"""Command line: `optprune certify | report | prune | dump-layers | eval`: the parser (its flags derived from
the settings' specs) and the dispatch; each command's handler is a module of this package, imported when run."""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from ..config import SPECS, CalibrationSpec, MethodSpec, ObjectiveSpec, PlacementSpec
from ..settings import add_arguments


def cmd_certify(args) -> int:
    from .layer import cmd_certify
    return cmd_certify(args)


def cmd_report(args) -> int:
    from .layer import cmd_report
    return cmd_report(args)


def cmd_dump_layers(args) -> int:
    from .dump import dump_layers_main
    return dump_layers_main(args)


def cmd_prune(args) -> int:
    from .prune import prune_main
    return prune_main(args)


def cmd_eval(args) -> int:
    from .evaluate import eval_main
    return eval_main(args)


def _add_layer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default="", help="safetensors file with <name>.weight and <name>.gram (dump-layers)")
    p.add_argument("--name", default="", help="comma-separated layer names (default: all in the file)")
    p.add_argument("--method", default="magnitude,wanda,sparsegpt,sparsefw,sparseswaps,maiht")
    add_arguments(p, MethodSpec, only=("pattern", "sparsity"))
    p.add_argument("--rows", default="0", help="rows of the certified sub-block, e.g. 0,1")
    p.add_argument("--window", type=int, default=None, help="columns of the certified sub-block (default 24, "
                   "at most the layer's)")
    from ..exact import EXACT_METHODS
    p.add_argument("--exact", default="milp", choices=sorted(EXACT_METHODS),
                   help="; ".join(f"{m.name}: {m.problem} problem, {m.statement}" for m in EXACT_METHODS.values()))
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds each HiGHS solve may take: every "
                   "method's exact sub-block, and its relaxation bound (default 60)")
    add_arguments(p, PlacementSpec, only=("device",))
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
    c.add_argument("--subblocks", action="store_true", help="with --dense: instead of the whole-model certificate "
                   "(every row of every layer bounded), each layer's sub-block certificate (--rows, --window, --exact, "
                   "--full-row-bounds, --dnn-iters, --neighbourhood)")
    from .certify_model import MODEL_BOUNDS
    c.add_argument("--bound", default="qcr", choices=MODEL_BOUNDS, help="with --dense: the bound on every row "
                   "(optprune.exact.bounds; qcr: one SDP diagonal per layer; box: the [0, 1] relaxation)")
    c.add_argument("--bound-iters", type=int, default=300, help="with --dense: the bound's first-order steps per "
                   "layer (the bound is proven at every step; more steps, tighter)")
    c.add_argument("--neighbourhood", type=float, default=0.0, help="with --dense: seconds per row (of --rows) for "
                   "a neighbourhood certificate: the largest window of its most ambiguous decisions solved exactly")
    add_arguments(c, CalibrationSpec, only=("calib", "nsamples", "seqlen", "seed", "data_dir"))
    c.set_defaults(func=cmd_certify)


def _add_report(sub) -> None:
    """`optprune report`: the Markdown report with figures of a layer file."""
    rp = sub.add_parser("report", help="Markdown report with figures (progress, gaps, overlap, rows) for a layer file")
    _add_layer_args(rp)
    rp.add_argument("--out", required=True, help="folder for report.md and the PNG figures")
    rp.set_defaults(func=cmd_report)


MODEL_HELP = "local path, hub id, or an embedded model: smollm2-135m (the default), gemma3-270m"


def _add_prune(sub) -> None:
    """`optprune prune`: the model and output, then every setting of the run (`PruneConfig`'s specs)."""
    pr = sub.add_parser("prune", help="prune a Hugging Face causal LM block by block")
    pr.add_argument("--model", default="", help=MODEL_HELP)
    pr.add_argument("--gguf-file", default="", help="GGUF file inside --model (or a path)")
    pr.add_argument("--out", required=True, help="output folder (never the input model's folder)")
    pr.add_argument("--save-format", default="plain",
                    help="plain: the base architecture's checkpoint, zeros as zeros, no quantization_config "
                         "(transformers, vLLM, llama.cpp's converter load it); compressed: compressed-tensors' "
                         "sparse-24-bitmask for 2:4, sparse-bitmask where smaller, read by optprune.load_pretrained "
                         "only (default: plain)")
    pr.add_argument("--eval-ppl", action="store_true", help="also evaluate WikiText-2 perplexity")
    pr.add_argument("--no-resume", action="store_true")
    pr.add_argument("--recipe", default="", metavar="NAME|FILE",
                    help="the run's settings from a preset (best, balanced, fast) or a recipe YAML (an output "
                         "folder's recipe.yaml reruns it); explicit flags override it")
    for spec in SPECS:
        add_arguments(pr, spec)
    pr.set_defaults(func=cmd_prune)


def explicit_settings(argv: list[str]) -> set[str]:
    """The prune settings the command line gives itself (so that a recipe does not override them): argv parsed
    again with every default suppressed, abbreviations and `--flag=value` resolved by argparse as in the run."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prune"]
    for action in sub._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "func"}


def _add_dump_layers(sub) -> None:
    """`optprune dump-layers`: chosen blocks' layer problems to a safetensors file."""
    dl = sub.add_parser("dump-layers", help="write the layer problems (W, input Gram; with --target dense also the "
                        "cross term and the dense Gram) of chosen blocks to a safetensors file for certify/report")
    dl.add_argument("--model", default="", help=MODEL_HELP)
    dl.add_argument("--gguf-file", default="")
    dl.add_argument("--blocks", required=True, help="comma-separated block indices, e.g. 0,14,29")
    dl.add_argument("--out", required=True, help="the .safetensors file to write")
    add_arguments(dl, CalibrationSpec, only=("calib", "nsamples", "seqlen", "seed", "data_dir"))
    add_arguments(dl, MethodSpec, defaults={"method": ""})      # "": the dense model's problems
    add_arguments(dl, ObjectiveSpec, only=("target",))
    add_arguments(dl, PlacementSpec, only=("dtype", "device", "batch"))
    dl.set_defaults(func=cmd_dump_layers)


def _add_eval(sub) -> None:
    """`optprune eval`: perplexity and zero-shot accuracy of a saved model."""
    ev = sub.add_parser("eval", help="perplexity / zero-shot accuracy of a saved model")
    ev.add_argument("--model", default="", help="saved model folder, or " + MODEL_HELP.split(", or ")[1])
    ev.add_argument("--gguf-file", default="")
    ev.add_argument("--ppl", default="wikitext2")
    ev.add_argument("--zeroshot", default="", help="comma list: arc_easy,arc_challenge,piqa,boolq,rte,...")
    ev.add_argument("--limit", type=int, default=0, help="at most this many items per zero-shot task (the first ones)")
    ev.add_argument("--zeroshot-scorer", default="auto",
                    help="harness: lm-evaluation-harness (HFLM on the model in memory, optprune[eval]); builtin: "
                         "optprune's scorer; auto: the harness when installed")
    ev.add_argument("--max-windows", type=int, default=0, help="at most this many ppl windows (0 = all)")
    add_arguments(ev, CalibrationSpec, only=("seqlen", "data_dir"))
    add_arguments(ev, PlacementSpec, only=("dtype", "device", "batch"))
    ev.add_argument("--json", default="")
    ev.set_defaults(func=cmd_eval)


INTERRUPTED = {"prune": "what was finished is kept in --out; rerun the same command to resume (bit-identically)"}


def _interrupt(*_):
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a scheduler's stop) handled as Ctrl-C while a command runs, the previous handler restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Exit 2 with one line when the input is wrong (arguments, paths, data that cannot be used:
    fix the command or the file); exit 1 with one line when the run fails (disk, solver, evaluation)."""
    from ..result import ExactSolveError
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)        # the command, as the report states it
    try:
        with terminate_as_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"optprune: interrupted: {INTERRUPTED.get(args.command, 'nothing was written')}", file=sys.stderr)
        if "formulations.backends" in sys.modules and argv is None:    # the process itself, not a caller's main()
            sys.modules["formulations.backends"].exit_now_if_solving(130)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"optprune: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ExactSolveError, FloatingPointError) as exc:
        print(f"optprune: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
