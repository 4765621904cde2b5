"""Zero-shot accuracy of the dense SmolLM2-135M and of finished `pipeline_ppl.py` runs, each pruned model
rebuilt from its resume state (the saved blocks under --work), on the local tasks: the first --limit items
of each task's file, scored by lm-evaluation-harness when installed (else the built-in scorer), bf16 as
the perplexity tables (--dtype: the pruned runs' forward dtype, which their fingerprints hold).  Writes
docs/results/<out>.{json,md}; a row already in the JSON with the same limit and tasks is kept, so an
interrupted run resumes with the next model.  Another embedded model: --model gemma3-270m (its scores start
every request with BOS, as its perplexity's windows do).

    python validation/zeroshot_rows.py --work runs/best --limit 200 --data-dir ../shared/data \
        --runs per-row-0.60/sparsegpt,per-row-0.60/sparsegpt+recon+milpsens
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from optprune.adapters import adapter_for
from optprune.engine.state import FINGERPRINT, ResumeState, model_digest
from optprune.evaluation import TASKS, check_zeroshot, evaluate_zeroshot
from optprune.checkpoints.model_io import load_model
from optprune.parallel import machine_name
from optprune.config import resolve_dtype
from pipeline_ppl import model_title, per_row_first, zeroshot_name      # this folder's sibling script

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = dict(model="", dtype="bfloat16", prefix="smollm2_best")    # the page's command names the others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "best"), help="pipeline_ppl.py's --work")
    ap.add_argument("--runs", required=True, help="comma list of <setting>/<method> folders under --work")
    ap.add_argument("--limit", type=int, default=200, help="items per task (the first ones; 0: all)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--prefix", default=DEFAULTS["prefix"], help="pipeline_ppl.py's --prefix (the ppl column's tables)")
    ap.add_argument("--out", default="", help="results name (default: <prefix's model>_zeroshot, e.g. smollm2_zeroshot)")
    ap.add_argument("--model", default=DEFAULTS["model"], help="pipeline_ppl.py's --model (default: the embedded SmolLM2-135M)")
    ap.add_argument("--dtype", default=DEFAULTS["dtype"], help="the runs' forward dtype (auto: as pipeline_ppl.py's)")
    args = ap.parse_args()
    args.torch_dtype = resolve_dtype(args.dtype)
    args.out = args.out or zeroshot_name(args.prefix)
    other_model = args.model not in ("", "smollm2-135m")
    if other_model == args.prefix.startswith("smollm2"):
        raise SystemExit(f"--prefix {args.prefix} names {'SmolLM2' if other_model else 'another model'}'s "
                         f"tables: pass the prefix of --model {args.model or 'smollm2-135m'}'s "
                         f"({'e.g. gemma3_ppl' if other_model else 'smollm2_best'})")
    tasks = args.tasks.split(",")
    check_zeroshot(tasks, args.data_dir, "auto")
    runs = ["dense"] + args.runs.split(",")
    fingerprints = check_runs(Path(args.work), runs[1:], args)
    path = ROOT / "docs" / "results" / f"{args.out}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for run in runs:
        if results.get(run, {}).get("settings") == dict(limit=args.limit, tasks=tasks):
            continue
        net, tok, _ = load_model(args.model, dtype=args.torch_dtype)
        row = dict(settings=dict(limit=args.limit, tasks=tasks), machine=machine_name())
        if run != "dense":
            ResumeState(Path(args.work) / run, adapter_for(net)).load(net)
            row["fingerprint"] = fingerprints[run]
        row["zero_fraction"] = zero_fraction(net)
        t0 = time.perf_counter()
        row.update(evaluate_zeroshot(net, tok, tasks, args.data_dir, args.limit))
        row["seconds"] = time.perf_counter() - t0
        results[run] = row
        path.write_text(json.dumps(results, indent=2))
        write_table(results, tasks, args, path.with_suffix(".md"))
        print(run, {t: r["acc"] for t, r in row["tasks"].items()}, flush=True)


def check_runs(work: Path, runs: list[str], args) -> dict[str, dict]:
    """Each run's fingerprint, after checking, before any evaluation, that every run is a finished resume
    state of the model loaded here (its fingerprint's config and weights digests); one line and exit if not."""
    net, _, _ = load_model(args.model, dtype=args.torch_dtype)
    digest, adapter = model_digest(net), adapter_for(net)
    fingerprints = {}
    for run in runs:
        folder = work / run
        if not (folder / FINGERPRINT).exists():
            raise SystemExit(f"{folder}: not a pipeline_ppl resume state (no {FINGERPRINT})")
        fingerprints[run] = json.loads((folder / FINGERPRINT).read_text())
        if any(fingerprints[run].get(k) != v for k, v in digest.items()):
            raise SystemExit(f"{folder}: its run pruned another model (or the same in another dtype) than the one loaded")
        done, _ = ResumeState(folder, adapter).progress(net)
        if done != len(adapter.blocks(net)):
            raise SystemExit(f"{folder}: only {done} of {len(adapter.blocks(net))} blocks are saved; finish the run first")
    return fingerprints


def zero_fraction(net) -> float:
    """Fraction of exact zeros over the blocks' linear weights (the pruned model's achieved sparsity)."""
    adapter = adapter_for(net)
    weights = [m.weight for block in adapter.blocks(net) for m in block.modules() if isinstance(m, torch.nn.Linear)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def table_order(run: str) -> tuple:
    """Sort key of a model's row: dense, then <setting>/<method> by setting in the perplexity tables' order
    (pipeline_ppl.per_row_first: N:M ones such as "2of4-0.50" last), sparsegpt first within a setting."""
    setting, _, method = run.partition("/")
    return run != "dense", per_row_first(setting), method != "sparsegpt", method


def write_table(results: dict, tasks: list[str], args, out: Path) -> None:
    """One row per model: each task's acc (acc_norm in brackets where the task defines it), the mean acc;
    the dense model first, then per setting (N:M ones last) SparseGPT before the others."""
    results = {run: results[run] for run in sorted(results, key=table_order)}
    any_row = next(iter(results.values()))
    defaults = dict(DEFAULTS, out=zeroshot_name(args.prefix))
    options = "".join(f" --{k} {getattr(args, k)}" for k, default in defaults.items() if getattr(args, k) != default)
    dtype = str(args.torch_dtype).removeprefix("torch.").replace("bfloat16", "bf16")
    lines = [f"# {model_title(args.model)}: zero-shot accuracy of the dense and pruned models\n",
             f"Machine: {' / '.join(sorted({row['machine'] for row in results.values()}))} (each model's threads "
             f"with its seconds below). Scorer: {any_row['scorer']}, {dtype}. Items: the first {args.limit or 'all'} "
             "of each task's local file (fewer where a task has fewer). Pruned models: the finished runs of "
             "`validation/pipeline_ppl.py` (full protocol: 128 x 2048 C4 calibration windows, seed 0), rebuilt from "
             f"their saved blocks. Command: `python validation/zeroshot_rows.py --work {args.work} --runs "
             f"{','.join(run for run in results if run != 'dense')} --limit {args.limit} --data-dir ../shared/data"
             f"{options}` "
             "(the JSON keeps every model's row, so later calls add rows).\n",
             "| model | wikitext2 ppl | zeros | " + " | ".join(tasks) + " | mean acc | mean acc, boolq aside |",
             "|---|---|---|" + "---|" * (len(tasks) + 2)]
    for run, row in results.items():
        cells = []
        for task in tasks:
            r = row["tasks"][task]
            cells.append(f"{r['acc']:.3f}" + ("" if r["acc_norm"] is None else f" ({r['acc_norm']:.3f})"))
        rest = [t for t in tasks if t != "boolq"]
        means = [sum(row["tasks"][t]["acc"] for t in ts) / len(ts) for ts in (tasks, rest)]
        lines.append(f"| {run} | {perplexity(run, args.prefix, args.model)} | {row['zero_fraction']:.3f} | " + " | ".join(cells)
                     + "".join(f" | {m:.3f}" for m in means) + " |")
    n = {t: any_row["tasks"][t]["n"] for t in tasks}
    lines += ["", "Items per task: " + ", ".join(f"{t} {k}" for t, k in n.items()) + ". zeros: fraction of exact "
              "zeros over the blocks' linear weights. At 200 items a task's acc has a standard error of about "
              "0.035 and the mean of 8 tasks about 0.012; boolq, where the dense model answers below the majority "
              "class, swings the mean most, hence the mean without it. Seconds per model: "
              + ", ".join(f"{run} {row['seconds']:.0f} ({row['machine'].rpartition(', ')[2]})"
                          for run, row in results.items()) + "."]
    out.write_text("\n".join(lines) + "\n")


def perplexity(run: str, prefix: str, model: str = "") -> str:
    """The run's WikiText-2 perplexity from its setting's table (`<prefix>_<setting>.json`; the dense model's from
    any of the prefix's tables, or for SmolLM2 any full-protocol table), '-' when none holds it."""
    results = ROOT / "docs" / "results"
    if run == "dense":
        paths = sorted(results.glob(f"{prefix}_*.json")) + ([] if model else sorted(results.glob("smollm2_ppl_*.json")))
        rows = [json.loads(p.read_text()).get("dense", {}) for p in paths]
    else:
        setting, method = run.split("/", 1)
        path = results / f"{prefix}_{setting}.json"
        rows = [json.loads(path.read_text()).get(method, {})] if path.exists() else []
    ppl = next((r["ppl"] for r in rows if r.get("ppl") is not None), None)
    return "-" if ppl is None else f"{ppl:.2f}"


if __name__ == "__main__":
    main()
