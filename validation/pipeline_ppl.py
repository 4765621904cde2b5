"""Benchmark: prune SmolLM2-135M with every method and report WikiText-2 perplexity.

Protocol (DEVELOPERS.md): calibration = 128 windows x 2048 tokens sampled (seed 0)
from the concatenated local C4 sample; evaluation = the whole WikiText-2 raw test,
non-overlapping 2048-token windows; bf16 forward passes on CPU (fp16 on GPU).
All methods run on one machine with the same code; results are kept in a JSON file
next to the table, so an interrupted run resumes with the next method (and a method
interrupted mid-way resumes at its first unfinished block).
Usage: python validation/pipeline_ppl.py --pattern per-row --sparsity 0.5 [--methods dense,wanda,...]
A method name may carry ingredients after "+" (RECIPE_SUFFIXES): "+refit" (least-squares refit of the kept
weights), "+dense" (dense-target layer problems), "+seq" (within-block sequential), "+recon" (block
reconstruction), "+recon32" (block reconstruction on the first 32 windows under bf16 autocast, one window per
step, 3 epochs at step size 2e-3, mse loss: the presets' until 2026-12-07, as the published SmolLM2 tables
ran it; "+recon32+chan+rel" is the presets' since), "+qkv0" / "+qkv1" / "+qkv2" (after +recon32: q/k/v fitted in no epoch / the
first epoch / the first two epochs only), "+lr4" / "+lr5" / "+lr2" (after +recon32: step size 4e-3 / 5e-4 / 2e-4), "+tok" / "+chan" (after
+recon32: the token- / channel-relative loss), "+rel" (after +recon32: each linear's step 1e-2 x the RMS of
its kept weights, about SmolLM2's 2e-3 there), "+owl" / "+milp" / "+milpsens" / "+milploss" (OWL; MILP priced by error, by Fisher sensitivity, by the
measured loss rise),
e.g. admm+dense+seq+recon, sparsegpt+milp (an allocation run also writes allocation_<setting>_<kind>.png,
each layer's sparsity per block).  --prefix ablation writes smollm2_ablation_<setting>.json/.md
(the 32-window ablation) instead of the full-protocol tables.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from optprune import Pattern
from optprune.adapters import adapter_for
from optprune.api import calibration_for, run_pruning
from optprune.config import AllocationSpec, CalibrationSpec, MethodSpec, PruneConfig, resolve_device, resolve_dtype
from optprune.settings import add_arguments, from_args
from optprune.allocation import plot_allocation
from optprune.checkpoints.model_io import load_model
from optprune.progress import BlockProgress
from optprune.api import mean_layer_error
from optprune.evaluation import wikitext2_perplexity
from optprune.parallel import machine_name
from optprune.recipes import QUICK_RECONSTRUCTION

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    """The table's own flags, and the run settings it varies, declared by optprune's specs."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="dense,wanda,sparsegpt,sparseswaps,maiht,sparsefw,magnitude")
    ap.add_argument("--work", default=str(ROOT / "runs" / "pipeline_ppl"))
    ap.add_argument("--prefix", default="smollm2_ppl", help="results file prefix (smollm2_ppl: the full protocol)")
    ap.add_argument("--model", default="", help="model folder or embedded name (default: the embedded SmolLM2-135M; "
                                                 "gemma3-270m: the embedded Gemma-3-270M)")
    ap.add_argument("--dtype", default="auto", help="forward passes: auto (fp16 on CUDA, bf16 on a CPU with native bf16, else float32) or a dtype")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--eval-windows", type=int, default=0, help="evaluate on the first N windows (0: all)")
    ap.add_argument("--results-dir", default=str(ROOT / "docs" / "results"))
    add_arguments(ap, MethodSpec, only=("pattern", "sparsity"))
    add_arguments(ap, CalibrationSpec, only=("nsamples", "seqlen", "data_dir"))
    add_arguments(ap, AllocationSpec, only=("allocation_step", "allocation_windows"))
    return ap.parse_args(argv)


def main():
    args = parse_args()
    pattern = Pattern.parse(args.pattern, args.sparsity, default=0.5)
    recipes = {m: recipe(m) for m in args.methods.split(",")}      # every name checked before any work
    tag = setting_tag(pattern)
    results_path = Path(args.results_dir) / f"{args.prefix}_{tag}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    windows = None
    pending = {m: s for m, s in recipes.items() if m not in results}
    if results and not pending:   # every row done already: the page is rendered again from the JSON, no model loaded
        write_table(results, pattern, results_path.with_suffix(".md"), args)
    for method, settings in pending.items():
        net, tok, _ = load_model(args.model, dtype=resolve_dtype(args.dtype))
        net.to(device)
        row = dict(method=method, machine=machine_name(), nsamples=args.nsamples, seqlen=args.seqlen,
                   dtype=str(resolve_dtype(args.dtype)).removeprefix("torch."))
        if settings is not None:
            config = from_args(PruneConfig, args, method=method.split("+")[0], device=str(device),
                               pricing_cache=str(Path(args.work) / tag / "pricing"), **settings)
            if windows is None and config.needs_calibration():
                windows = calibration_for(net, tok, adapter_for(net), config)
            row.update(prune_row(net, windows, config, method, Path(args.work) / tag, results_path.parent,
                                 "" if args.prefix in ("smollm2_ppl", "smollm2_best") else f"{args.prefix}_"))
        t0 = time.perf_counter()
        row.update(wikitext2_perplexity(net, tok, args.seqlen, args.data_dir, args.eval_windows, str(device)))
        row["eval_seconds"] = time.perf_counter() - t0
        results[method] = row
        results_path.write_text(json.dumps(results, indent=2))
        write_table(results, pattern, results_path.with_suffix(".md"), args)
        if args.prefix in ("smollm2_ppl", "smollm2_best") and not args.model:
            write_summary(results_path.parent)
        if args.prefix == "gemma3_ppl":
            write_summary(results_path.parent, "gemma3_ppl", model_title(args.model))
        if args.prefix == "smollm2_recipe" and not args.model:
            write_recipe_summary(results_path.parent)
        print(method, row, flush=True)


def recipe(method: str) -> dict | None:
    """The PruneConfig settings of `method`'s ingredients after "+" (None for dense); an unknown ingredient
    stops the run with one line."""
    if method == "dense":
        return None
    base, *suffixes = method.split("+")
    unknown = [x for x in suffixes if x not in RECIPE_SUFFIXES]
    if unknown:
        raise SystemExit(f"unknown ingredient {unknown} in {method!r}: use {', '.join(RECIPE_SUFFIXES)}")
    return {k: v for x in suffixes for k, v in RECIPE_SUFFIXES[x].items()}


def prune_row(net, windows, config: PruneConfig, method: str, work: Path, plots: Path, plot_prefix: str = "") -> dict:
    """Prune `net` in place with `config` (resuming under work/method, pricing cached in config.pricing_cache);
    the table row's timings, layer error, sparsity, allocation and reconstruction summaries (an allocation's
    plot written to plots/<plot_prefix>allocation_<setting>_<kind>.png)."""
    adapter = adapter_for(net)
    n_blocks = len(adapter.blocks(net))
    bar = BlockProgress(f"prune {method}", n_blocks)
    rep = run_pruning(net, windows, config, adapter, work / method, bar.update,
                      pricing_progress=BlockProgress(f"price {method}", n_blocks, then=bar.restart).update)
    row = prune_timing(rep, n_blocks)
    row["mean_rel_error"] = mean_layer_error(rep["layers"])
    row["sparsity"] = sum(r["sparsity"] for r in rep["layers"]) / len(rep["layers"])
    if rep.get("allocation"):
        alloc = rep["allocation"]
        row["sparsity"] = alloc["achieved_sparsity"]
        row["allocation"] = {k: alloc[k] for k in ("kind", "milp", "cost", "seconds", "survey_seconds",
                                                   "pricing_cached") if k in alloc}
        kinds = "+".join(x for x in method.split("+")[1:] if "allocation" in RECIPE_SUFFIXES[x])
        tag = setting_tag(config.parsed_pattern())
        plot_allocation(alloc, config.sparsity, plots / f"{plot_prefix}allocation_{tag}_{kinds}.png")
    if rep.get("reconstruction"):
        recon = rep["reconstruction"].values()
        row["reconstruction"] = {f"{slice_}_{when}": mean_measured([r[f"error_{when}"][slice_] for r in recon])
                                 for slice_ in ("train", "held_out") for when in ("before", "after")}
    return row


def mean_measured(values: list) -> float | None:
    """The mean of a block error over the blocks, None where a block did not measure it (the reconstruction
    measures the training windows' error before training only where no window is held out)."""
    return None if any(v is None for v in values) else sum(values) / len(values)


RECIPE_SUFFIXES = {"refit": dict(refit=True), "dense": dict(target="dense"), "seq": dict(sequential=True),
                   "recon": dict(reconstruct="block"),
                   # the presets' reconstruction as the published SmolLM2 tables ran it (mse loss, absolute step
                   # 2e-3); "+recon32+chan+rel" is the presets' since 2026-12-07
                   "recon32": dict(QUICK_RECONSTRUCTION, reconstruct_loss="mse", reconstruct_step="absolute",
                                   reconstruct_lr=2e-3),
                   "qkv0": dict(reconstruct_qkv_epochs=0), "qkv1": dict(reconstruct_qkv_epochs=1),
                   "qkv2": dict(reconstruct_qkv_epochs=2), "lr4": dict(reconstruct_lr=4e-3),
                   "tok": dict(reconstruct_loss="token"), "chan": dict(reconstruct_loss="channel"),
                   "lr5": dict(reconstruct_lr=5e-4), "lr2": dict(reconstruct_lr=2e-4),
                   "rel": dict(reconstruct_step="relative", reconstruct_lr=1e-2),
                   "owl": dict(allocation="owl"), "milp": dict(allocation="milp"),
                   "milpsens": dict(allocation="milp", allocation_cost="sensitivity"),
                   "milploss": dict(allocation="milp", allocation_cost="loss")}


def prune_timing(report: dict, n_blocks: int) -> dict:
    """Prune wall seconds summed from the report (block-0 inputs + every block), so a resumed
    run counts each block once; None when blocks were pruned by a run that did not time them.
    solver_seconds sums the layer solves alone; breakdown sums each pass's seconds over the blocks (capture: the
    block-0 inputs)."""
    blocks = report["block_seconds"]
    passes = sorted({k for times in report["breakdown"].values() for k in times})
    breakdown = {k: sum(t.get(k, 0.0) for t in report["breakdown"].values()) for k in passes}
    return dict(prune_seconds=report["input_seconds"] + sum(blocks.values()) if len(blocks) == n_blocks else None,
                solver_seconds=sum(r["seconds"] for r in report["layers"]),
                breakdown=dict(capture=report["input_seconds"], **breakdown))


def model_title(model: str) -> str:
    """The table's model name: the embedded model's hub name, else the folder's name."""
    from optprune.checkpoints.embedded import embedded_hub_id
    return (embedded_hub_id(model or "smollm2-135m") or Path(model).name).split("/")[-1]


def write_table(results: dict, pattern: Pattern, path: Path, args) -> None:
    any_row = next(iter(results.values()))
    extra = "" if args.prefix == "smollm2_ppl" else f" --nsamples {args.nsamples} --prefix {args.prefix}"
    extra += f" --model {args.model}" if args.model else ""
    extra += "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k, default in
                     (("dtype", "auto"), ("device", "auto"), ("eval_windows", 0)) if getattr(args, k) != default)
    extra += f" --allocation-step {args.allocation_step}" if args.allocation_step != 0.025 else ""
    extra += f" --allocation-windows {args.allocation_windows}" if args.allocation_windows else ""
    lines = [f"# {model_title(args.model)}, {pattern.name} {pattern.sparsity:.0%}: WikiText-2 perplexity\n",
             f"Machine: {any_row['machine']} (every method on this machine, same code and protocol). Calibration: {any_row['nsamples']} windows x "
             f"{any_row['seqlen']} tokens sampled with seed 0 from the concatenated local C4 sample; "
             f"evaluation: {evaluated_text(any_row, args.eval_windows)}; {any_row.get('dtype', 'bfloat16')} forward passes. "
             f"Command: `python validation/pipeline_ppl.py --pattern {pattern.name} --sparsity {pattern.sparsity}{extra} "
             f"--methods {','.join(results)}`.\n",
             "Prune seconds: wall time of calibration forward passes, Grams, solves and propagation "
             "(for a resumed run, the sum of its timed blocks; '-' where a block was pruned untimed); "
             "solver seconds: the layer solves alone. Magnitude needs no calibration: it prunes without forward "
             "passes, so its prune seconds are the mask selection alone and its layer errors (which need the "
             "Grams) are '-' where it ran that way.\n",
             "| method | wikitext2 ppl | prune seconds | solver seconds | mean layer rel. error | achieved sparsity |",
             "|---|---|---|---|---|---|"]

    def secs(v):
        return "-" if v is None else f"{v:.0f}"

    def err(v):
        return "-" if v is None else f"{v:.4g}"
    for m, r in results.items():
        lines.append(f"| {m} | {r['ppl']:.2f} | {secs(r.get('prune_seconds'))} | {secs(r.get('solver_seconds'))} | "
                     f"{err(r.get('mean_rel_error', 0))} | {r.get('sparsity', 0):.3f} |")
    lines += [f"\n{m}: {r['note']}" for m, r in results.items() if r.get("note")]
    lines += [f"\n{m}: block reconstruction, mean relative block output error over the blocks (weighted as its "
              f"{(recipe(m) or {}).get('reconstruct_loss', 'mse')} loss, so rows of different losses do not compare): "
              f"training windows "
              f"{err(r['reconstruction']['train_before'])} -> {err(r['reconstruction']['train_after'])}, held-out "
              f"windows {err(r['reconstruction']['held_out_before'])} -> {err(r['reconstruction']['held_out_after'])}"
              f"{' (-: not measured)' if None in r['reconstruction'].values() else ''}."
              for m, r in results.items() if r.get("reconstruction")]
    lines += [f"\n{m}: {allocation_line(r['allocation'])}" for m, r in results.items() if r.get("allocation")]
    lines += time_lines(results)
    path.write_text("\n".join(lines) + "\n")


def evaluated_text(row: dict, eval_windows: int) -> str:
    """What the perplexity was measured on: the whole WikiText-2 test, or only its first windows."""
    whole = f"WikiText-2 raw test ({row['tokens']} tokens"
    if eval_windows:
        return (f"the first {row['windows']} non-overlapping windows of {row['seqlen']} tokens of the {whole}; "
                f"not the whole test: an iteration table, not the protocol's)")
    return f"whole {whole}, {row['windows']} non-overlapping windows of {row['seqlen']})"


PASSES = (("capture", "capture"), ("forward", "forwards"), ("grams", "Grams"), ("solve", "solves"),
          ("dense_propagate", "dense stream"), ("reconstruct", "reconstruction"), ("propagate", "propagation"),
          ("io", "I/O"))


def time_lines(results: dict) -> list[str]:
    """Where each timed row's seconds go: the pricing pass and each pass of the engine summed over the blocks,
    the total against SparseGPT's prune seconds of the same run."""
    timed = {m: r for m, r in results.items() if r.get("breakdown") and r.get("prune_seconds")}
    if not timed:
        return []
    base = results.get("sparsegpt", {}).get("prune_seconds")
    lines = ["\n## Where the time goes\n",
             "Seconds summed over the blocks (pricing: the allocation's pass over the dense model, every layer "
             "pruned at every menu sparsity, then its output Fisher where the price is the sensitivity; "
             "capture: block 0's inputs; forwards: the calibration passes that "
             "collect the Grams; the reconstruction includes its error passes (the kept epoch's final check reads "
             "the propagation); propagation: the pruned block's outputs for the next block; I/O: saving the resume "
             "state).\n",
             "| method | pricing | " + " | ".join(label for _, label in PASSES) + " | total | x SparseGPT |",
             "|---|" + "---|" * (len(PASSES) + 3)]
    for m, r in timed.items():
        total = run_seconds(r)
        pricing = total - r["prune_seconds"]
        parts = " | ".join(f"{r['breakdown'].get(key, 0.0):.0f}" for key, _ in PASSES)
        ratio = f"{total / base:.2f}" if base else "-"
        lines.append(f"| {m} | {pricing:.0f} | {parts} | {total:.0f} | {ratio} |")
    return lines


def allocation_line(alloc: dict) -> str:
    """One sentence on a run's allocation: its kind, and for the MILP its cost, status, optimum, bound, time."""
    priced = ("its pricing pass read back from --pricing-cache" if alloc.get("pricing_cached")
              else "including the pricing pass")
    text = f"{alloc['kind']} allocation ({alloc.get('seconds', 0):.0f} s {priced})"
    if "milp" in alloc:
        milp = alloc["milp"]
        text += (f"; MILP priced by {alloc.get('cost')}: {milp['status']}, optimum {milp['objective']:.6g}, "
                 f"bound {milp['bound']:.6g}, {milp['seconds']:.2f} s")
    return text + "."


SUMMARY_ORDER = ("dense", "magnitude", "wanda", "sparsegpt", "sparsefw", "maiht", "sparseswaps", "sparseswaps+refit")


def setting_tag(pattern: Pattern) -> str:
    """A setting's file tag (smollm2_ppl_<tag>.json): per-row 60% -> "per-row-0.60", 2:4 -> "2of4-0.50"."""
    return f"{pattern.name}-{pattern.sparsity:.2f}".replace(":", "of")


def setting_label(tag: str) -> str:
    """Inverse of setting_tag, for a column head: "per-row-0.60" -> "per-row 60%", "2of4-0.50" -> "2:4 50%"."""
    name, _, sparsity = tag.rpartition("-")
    return f"{name.replace('of', ':')} {float(sparsity):.0%}"


def per_row_first(label: str) -> tuple[bool, str]:
    """Sort key of a setting label ("per-row 60%", "2:4 50%"): per-row and unstructured settings, then N:M."""
    return label[0].isdigit(), label


def write_summary(results_dir: Path, prefix: str = "smollm2_ppl", title: str = "SmolLM2-135M-Instruct") -> None:
    """One side-by-side table of every setting's JSON (<prefix>_<tag>.json): perplexity, prune seconds.
    Columns: per-row settings first, then N:M; rows: SUMMARY_ORDER, then any other method.  SmolLM2's page
    adds its best-combination runs; another model's, each setting's best row against SparseGPT's."""
    settings = {setting_label(p.stem.removeprefix(f"{prefix}_")): json.loads(p.read_text())
                for p in results_dir.glob(f"{prefix}_*.json")}
    if not settings:
        return
    settings = dict(sorted(settings.items(), key=lambda kv: per_row_first(kv[0])))
    methods = [m for m in SUMMARY_ORDER if any(m in r for r in settings.values())]
    methods += sorted({m for r in settings.values() for m in r} - set(methods))
    any_row = next(iter(next(iter(settings.values())).values()))
    lines = [f"# {title}: every method and setting side by side\n",
             f"Machine: {any_row['machine']}; protocol and commands as on each setting's page "
             f"({any_row['nsamples']} x {any_row['seqlen']} C4 calibration windows, seed 0; whole WikiText-2 raw "
             f"test, {any_row['seqlen']}-token windows). "
             "Written by `validation/pipeline_ppl.py` from the per-setting JSON files.\n"]
    for title, key, fmt in (("WikiText-2 perplexity (lower is better)", "ppl", "{:.2f}"),
                            ("Prune seconds (calibration passes, Grams, solves, propagation)", "prune_seconds",
                             "{:.0f}")):
        lines += [f"## {title}\n", "| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
        for m in methods:
            cells = ["not run" if m not in r else "-" if r[m].get(key) is None else fmt.format(r[m][key])
                     for r in settings.values()]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += best_combinations(results_dir) if prefix == "smollm2_ppl" else best_against_sparsegpt(settings)
    zeroshot = f"{zeroshot_name(prefix)}.md"
    if prefix != "smollm2_ppl" and (results_dir / zeroshot).exists():
        lines += [f"Zero-shot accuracy of these models beside their perplexity: [{zeroshot}]({zeroshot}).", ""]
    (results_dir / f"{prefix}_summary.md").write_text("\n".join(lines))


def zeroshot_name(prefix: str) -> str:
    """The zero-shot page of a model's tables (validation/zeroshot_rows.py): gemma3_ppl -> gemma3_zeroshot."""
    return f"{prefix.partition('_')[0]}_zeroshot"


def best_against_sparsegpt(settings: dict[str, dict]) -> list[str]:
    """Per setting (label -> its JSON rows), the lowest-perplexity pruned row against the SparseGPT row of the
    same run: perplexity change and prune seconds (with the allocation's pricing pass) as a multiple."""
    lines = ["## The best of each setting against SparseGPT (same run)\n",
             "| setting | method | wikitext2 ppl | sparsegpt ppl | change | seconds, pricing included | x SparseGPT |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in settings.items():
        rows = {m: r for m, r in rows.items() if r.get("ppl") is not None and r.get("prune_seconds") is not None}
        best = min((m for m in rows if m != "sparsegpt"), key=lambda m: rows[m]["ppl"], default=None)
        ref = rows.get("sparsegpt")
        if best is None or ref is None:
            continue
        secs = run_seconds(rows[best])
        lines.append(f"| {label} | {best} | {rows[best]['ppl']:.2f} | {ref['ppl']:.2f} | "
                     f"{rows[best]['ppl'] / ref['ppl'] - 1:+.1%} | {secs:.0f} | {secs / run_seconds(ref):.2f} |")
    presets = "; ".join(f"{m} is `--recipe {name}`" for name, m in
                        (("balanced", "sparsegpt+recon32+chan+rel"), ("best", "sparsegpt+recon32+chan+rel+milpsens")))
    return lines + ["", f"The methods are named by their ingredients (validation/pipeline_ppl.py): {presets}.", ""] \
        if len(lines) > 3 else []


def best_combinations(results_dir: Path) -> list[str]:
    """The summary's section on the full-protocol best-combination runs (smollm2_best_<tag>.json): per setting,
    its lowest-perplexity row against SparseGPT's row of the same run."""
    lines = ["## Best combinations (full protocol, each against SparseGPT in the same run)\n",
             "| setting | method | wikitext2 ppl | sparsegpt ppl, same run | change | prune seconds |",
             "|---|---|---|---|---|---|"]
    runs = {setting_label(p.stem.removeprefix("smollm2_best_")): p for p in results_dir.glob("smollm2_best_*.json")}
    for label in sorted(runs, key=per_row_first):
        rows = {m: r for m, r in json.loads(runs[label].read_text()).items() if r.get("ppl") is not None}
        best = min((m for m in rows if m != "sparsegpt"), key=lambda m: rows[m]["ppl"], default=None)
        if best is None:
            continue
        ref = rows.get("sparsegpt", {}).get("ppl")
        prune = rows[best].get("prune_seconds")
        lines.append(f"| {label} | {best} | {rows[best]['ppl']:.2f} | "
                     + ("not run | - |" if ref is None else f"{ref:.2f} | {rows[best]['ppl'] / ref - 1:+.0%} |")
                     + (" - |" if prune is None else f" {prune:.0f} |"))
    if len(lines) == 3:
        return []
    return lines + ["", "Each setting's page (smollm2_best_<setting>.md) gives the command, the notes on its timings and "
                    "the ingredients' diagnostics.", ""]

PRESET_ROWS = {"fast": "sparsegpt", "balanced": "sparsegpt+recon32", "best": "sparsegpt+recon32+milpsens"}


def run_seconds(row: dict) -> float:
    """A row's prune seconds plus its allocation's pricing pass (0 where the pricing was read from the cache)."""
    alloc = row.get("allocation", {})
    return row["prune_seconds"] + (0.0 if alloc.get("pricing_cached") else alloc.get("seconds", 0.0))


def write_recipe_summary(results_dir: Path) -> None:
    """smollm2_recipe_summary.md: per setting (smollm2_recipe_<tag>.json), each preset's perplexity and seconds
    against the file's SparseGPT row, and `best` against the earlier best result (smollm2_best_<tag>.json) with
    the issue's bars: at most 2.0x SparseGPT's seconds, within +3% of that perplexity.  On N:M `best` is
    `balanced` (the allocation leaves N:M uniform)."""
    lines = ["# SmolLM2-135M-Instruct: the recipe presets at the full protocol\n",
             "Each setting's page (smollm2_recipe_<setting>.md) gives the command, the machine and where the "
             "time goes; seconds are prune seconds plus the allocation's pricing pass; x SparseGPT is against the "
             "SparseGPT row of the same page. The bar: the earlier best result of the setting "
             "(smollm2_best_<setting>.md: every window reconstructed in float32, pricing on 32 windows).\n",
             "| setting | preset | wikitext2 ppl | seconds | x SparseGPT | earlier best ppl | change |",
             "|---|---|---|---|---|---|---|"]
    pages = {p.stem.removeprefix("smollm2_recipe_"): json.loads(p.read_text())
             for p in results_dir.glob("smollm2_recipe_*.json")}
    notes = []
    for tag in sorted(pages, key=lambda t: per_row_first(setting_label(t))):
        rows, label = pages[tag], setting_label(tag)
        earlier = results_dir / f"smollm2_best_{tag}.json"
        bar = min((r["ppl"] for m, r in json.loads(earlier.read_text()).items() if m != "sparsegpt"),
                  default=None) if earlier.exists() else None
        base = rows.get("sparsegpt", {}).get("prune_seconds")
        presets = dict(PRESET_ROWS, best=PRESET_ROWS["balanced"]) if tag.startswith("2of") else PRESET_ROWS
        for preset, method in presets.items():
            row = rows.get(method)
            if row is None:
                continue
            secs = run_seconds(row)
            ratio = f"{secs / base:.2f}" if base else "-"
            versus = "-" if bar is None or preset != "best" else f"{bar:.2f}"
            change = "-" if versus == "-" else f"{row['ppl'] / bar - 1:+.2%}"
            lines.append(f"| {label} | {preset} | {row['ppl']:.2f} | {secs:.0f} | {ratio} | {versus} | {change} |")
        notes += [f"- {label}, {m}: {r['note']}" for m, r in rows.items() if r.get("note")]
    (results_dir / "smollm2_recipe_summary.md").write_text("\n".join(lines + ([""] + notes if notes else [])) + "\n")


if __name__ == "__main__":
    main()
