"""Fitting q/k/v in fewer epochs of the block reconstruction: the README's main job with one setting changed,
`--reconstruct-qkv-epochs Q` for Q = -1 (every epoch, the `best` recipe), 2, 1 and 0.

Each run is `optprune prune --recipe best --nsamples 32 --reconstruct-qkv-epochs Q --out DIR --eval-ppl`, one
after the other (never two at once: they would slow each other); `--reports DIR DIR DIR DIR` writes the page
from output folders already made by those commands instead (every epoch, the first two, the first, none).  Writes
docs/results/smollm2_reconstruct_qkv.{json,md} (or --out).

    python validation/reconstruct_qkv.py [--work DIR] [--reports EVERY TWO FIRST NONE] [--remark TEXT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "results" / "smollm2_reconstruct_qkv"
VARIANTS = [(-1, "every epoch (3 of 3; `best`)"), (2, "the first two epochs (2 of 3)"), (1, "the first epoch (1 of 3)"),
            (0, "no epoch (0 of 3)")]


def command(qkv: int, out: Path) -> list[str]:
    return ["optprune", "prune", "--recipe", "best", "--nsamples", "32", "--reconstruct-qkv-epochs", str(qkv),
            "--out", str(out), "--eval-ppl"]


def run_variants(work: Path) -> list[Path]:
    """Each variant's output folder under `work`, run now (one at a time)."""
    folders = []
    for qkv, _ in VARIANTS:
        out = work / f"qkv{qkv}"
        subprocess.run(command(qkv, out), check=True)
        folders.append(out)
    return folders


def row(folder: Path) -> dict:
    """A run's figures from its optprune_report.json: reconstruction seconds (each block's fit with the kept
    block's propagation), prune and pricing seconds, perplexity, mean held-out block error before and after."""
    path = folder / "optprune_report.json"
    if not path.is_file():
        sys.exit(f"reconstruct_qkv: {folder} holds no optprune_report.json (not an `optprune prune` output folder)")
    report = json.loads(path.read_text())
    missing = [k for k in ("reconstruction", "allocation", "wikitext2") if not report.get(k)]
    if missing:
        sys.exit(f"reconstruct_qkv: {path} has no {', '.join(missing)} (run with --recipe best and --eval-ppl)")
    blocks = report["reconstruction"].values()
    return dict(folder=str(folder), command=report["command"], machine=report["machine"],
                qkv_epochs=report["settings"]["objective"].get("reconstruct_qkv_epochs", -1),
                reconstruction_seconds=sum(b["seconds"] for b in blocks), prune_seconds=report["prune_seconds"],
                pricing_seconds=report["allocation"]["seconds"], ppl=report["wikitext2"]["ppl"],
                held_out_before=statistics.mean(b["error_before"]["held_out"] for b in blocks),
                held_out_after=statistics.mean(b["error_after"]["held_out"] for b in blocks))


HEADER = """# Fitting q/k/v in fewer epochs of the block reconstruction (SmolLM2-135M-Instruct, 50% per-row)

Machine: {machine}, one run at a time. Each row is the README's main job with one setting changed:
`optprune prune --recipe best --nsamples 32 --reconstruct-qkv-epochs Q --out DIR --eval-ppl` (32 calibration
windows of 2048 tokens, seed 0; the whole WikiText-2 raw test; the `best` recipe fits every linear in each of
its 3 epochs, Q = -1). Written by `python validation/reconstruct_qkv.py` from the runs'
`optprune_report.json`{origin}.

Why it could pay (profiled once with torch.profiler on 2026-12-07, not by this script): in one reconstruction step (one 2048-token window through block 3, bf16 autocast, float32
master weights) the flash-attention kernel took 61% of the time (forward 35 ms, backward 64 ms of 163 ms; the
matrix products 50 ms). With q/k/v frozen no gradient reaches the attention, so its backward is skipped: a step
took 0.092 s instead of 0.170 s.

| q/k/v fitted in | reconstruction s | prune s | pricing s | WikiText-2 ppl | vs every epoch | mean held-out block error (before -> after) |
|---|---|---|---|---|---|---|
"""

FOOTER = """
Reconstruction seconds: each block's fit, its kept block's propagation included; prune seconds include the
pricing pass. {errors} No variant is in a preset: `best` must stay within +3% of the best perplexity, and at
50% and 60% per-row it is at that limit (32.92 against 32.93, 47.05 against 47.01;
`smollm2_recipe_summary.md`). The setting stays for users who trade some prune time for perplexity.
"""


def error_sentence(rows: list[dict]) -> str:
    """What the block errors say against the perplexity, from the rows (every epoch first)."""
    base = rows[0]
    lower = [r for r in rows[1:] if r["held_out_after"] <= base["held_out_after"]]
    worse = [r for r in lower if r["ppl"] > base["ppl"]]
    if not worse:
        return "The mean held-out block error after the fit and the perplexity moved together."
    return (f"With q/k/v frozen in {len(worse)} of {len(rows) - 1} variants the mean held-out block error after "
            "the fit is no higher than with every epoch (each block starts from its own pruned stream), yet the "
            "perplexity is higher: the block's output error does not rank the variants.")


def write_page(rows: list[dict], page: Path, origin: str, remark: str = "") -> None:
    """page.json (the rows) and page.md (the table)."""
    page.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = [HEADER.format(machine=rows[0]["machine"], origin=origin)]
    base = rows[0]["ppl"]
    for r, (_, label) in zip(rows, VARIANTS):
        versus = "-" if r is rows[0] else f"{100 * (r['ppl'] / base - 1):+.1f}%"
        ppl = f"**{r['ppl']:.3f}**" if r is rows[0] else f"{r['ppl']:.3f}"
        lines.append(f"| {label} | {r['reconstruction_seconds']:.0f} | {r['prune_seconds']:.0f} | "
                     f"{r['pricing_seconds']:.0f} | {ppl} | {versus} | "
                     f"{r['held_out_before']:.5f} -> {r['held_out_after']:.5f} |\n")
    footer = FOOTER.format(errors=error_sentence(rows))
    page.with_suffix(".md").write_text("".join(lines) + footer + (f"\n{remark}\n" if remark else ""))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/reconstruct_qkv", help="where the runs' output folders go")
    ap.add_argument("--reports", nargs=len(VARIANTS), metavar="DIR",
                    help="existing output folders (every epoch, the first two, the first, none)")
    ap.add_argument("--out", default=str(PAGE), help="the page, without suffix (.json and .md are written)")
    ap.add_argument("--remark", default="", help="a paragraph added under the table (what disturbed a run)")
    args = ap.parse_args(argv)
    folders = [Path(d) for d in args.reports] if args.reports else run_variants(Path(args.work))
    rows = [row(f) for f in folders]
    wanted = [q for q, _ in VARIANTS]
    if [r["qkv_epochs"] for r in rows] != wanted:
        sys.exit(f"reconstruct_qkv: the folders ran q/k/v epochs {[r['qkv_epochs'] for r in rows]}, "
                 f"not {wanted} in that order")
    write_page(rows, Path(args.out), " (folders made by earlier runs of those commands)" if args.reports else "",
               args.remark)
    print(Path(args.out).with_suffix(".md"))


if __name__ == "__main__":
    main()
