"""Whole-model certificates of SmolLM2 checkpoints: how far each is from the best masks of its pattern.

For each method (optprune's SparseGPT, Wanda and SparseSwaps by default) `optprune prune` writes a checkpoint,
and `validation/plain_wanda.py` writes one as a plain script of another tool's kind would; then
`optprune certify --dense <dense> --pruned <checkpoint>` bounds every row of every layer on the same calibration
windows.  One row per checkpoint: the model gap (sum of relative errors / sum of bounds), the median and the worst
layer gap, the share of rows within 1.5x of their bound, the gap per kind of layer, and the certificate's seconds.
Writes docs/results/certify_model_<model>.md (+ .json).

Usage: python validation/certify_model_table.py [--methods sparsegpt,wanda,sparseswaps] [--nsamples 128]
       [--no-plain] [--dry-run]   (a tiny model folder given with --model, 2 windows of 32 tokens)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dense_checkpoint import dense_folder
from plain_wanda import wanda_script

from optprune.compare import ratio
from optprune.parallel import machine_name

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "plain Wanda-style script"


def run(cmd: list[str]) -> float:
    """Seconds of an optprune command (its output streamed); stops the table on failure."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optprune", *cmd], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def checkpoints(args, work: Path, dense: str) -> dict[str, str]:
    """{name: checkpoint folder}: optprune's methods and the plain script's."""
    out = {}
    for method in args.methods.split(","):
        folder = work / method
        run(["prune", "--method", method, "--pattern", args.pattern, "--sparsity", str(args.sparsity), "--out",
             str(folder), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--model", dense])
        out[f"optprune {method}"] = str(folder)
    if args.no_plain:
        return out
    if not (work / "plain" / "config.json").exists():
        text = (ROOT / "optprune" / "corpora" / "wikitext2-test.raw.txt.gz")
        import gzip
        wanda_script(dense, gzip.open(text, "rt").read()[:200000], work / "plain", args.sparsity, args.plain_tokens)
    out[PLAIN] = str(work / "plain")
    return out


def certificate(name: str, folder: str, args, work: Path, dense: str) -> dict:
    report = work / f"{Path(folder).name}.cert.json"
    seconds = run(["certify", "--dense", dense, "--pruned", folder, "--pattern", args.pattern, "--sparsity",
                   str(args.sparsity), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
                   "--bound-iters", str(args.bound_iters), "--json", str(report)])
    return dict(summary_row(name, seconds, report), machine=machine_name())


def summary_row(name: str, seconds: float, report: Path) -> dict:
    """The table's row of one certificate (the JSON `optprune certify --json` wrote)."""
    cert = json.loads(Path(report).read_text())
    summary, layers = cert["summary"], [r for r in cert["layers"] if r["pattern_ok"]]
    rows = summary["rows_by_gap"]
    within = sum(n for b, n in rows.items() if b in ("<1.1", "<1.25", "<1.5"))
    worst = max(layers, key=lambda r: r["gap"] if r["gap"] == r["gap"] else -1)
    return dict(name=name, seconds=seconds, overall=summary["overall"], per_kind=summary["per_kind"],
                rows_within_1_5=within / max(sum(rows.values()), 1), worst_layer=worst["layer"],
                layers=len(cert["layers"]), error_own_weights=sum(r["error_weights"] for r in layers),
                report=str(report))


def tabulated(out: Path) -> list[dict]:
    """The rows of a finished run (`out`'s .json), each re-read from the certificate it names, seconds kept."""
    return [dict(summary_row(r["name"], r["seconds"], r["report"]), machine=r["machine"])
            for r in json.loads(out.with_suffix(".json").read_text())]


def command_line() -> str:
    """This run's arguments, less --tabulate (a table rewritten from a run names the run's command)."""
    return " ".join(a for a in sys.argv[1:] if a != "--tabulate")


def table(rows: list[dict], args) -> str:
    kinds = list(rows[0]["per_kind"])
    lines = [f"# Whole-model certificates ({args.pattern} {args.sparsity:g})", "",
             f"Command: `python validation/certify_model_table.py {command_line()}` "
             f"({', '.join(sorted({r['machine'] for r in rows}))}). Each checkpoint certified "
             f"by `optprune certify --dense --pruned` (QCR bound on every row of every layer, {args.bound_iters} "
             f"steps per layer) on {args.nsamples} x {args.seqlen} C4 windows. A gap is error / bound: the masks are "
             "within that factor of the best masks of the pattern (per layer, and for the sum over the model); '-' where the "
             "bound is under 0.1% of the error. Sums are of the layers' relative errors: the masks' (kept weights "
             "as in the dense model: what the bound is for), the checkpoint's own weights' (SparseGPT's updates "
             "included), and the bound.", "",
             "| checkpoint | sum of errors (masks) | sum of errors (own weights) | sum of bounds | model gap | "
             "median layer gap | worst layer gap | rows within 1.5x | " + " | ".join(kinds) + " | certify seconds |",
             "|---" * (9 + len(kinds)) + "|"]
    for r in rows:
        o = r["overall"]
        lines.append(f"| {r['name']} | {o['error']:.4g} | {r['error_own_weights']:.4g} | {o['bound']:.4g} | "
                     f"{ratio(o['gap'])} | {ratio(o['median_layer_gap'])} | "
                     f"{ratio(o['worst_layer_gap'])} ({r['worst_layer']}) | {r['rows_within_1_5']:.1%} | "
                     + " | ".join(ratio(r['per_kind'][k]['gap']) for k in kinds) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="the dense model (default: the embedded SmolLM2-135M)")
    ap.add_argument("--methods", default="sparsegpt,wanda,sparseswaps")
    ap.add_argument("--pattern", default="per-row")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--bound-iters", type=int, default=300)
    ap.add_argument("--plain-tokens", type=int, default=2048, help="the plain script's calibration tokens")
    ap.add_argument("--no-plain", action="store_true", help="leave the plain script's checkpoint out")
    ap.add_argument("--work", default=str(ROOT / "runs" / "certify_model"))
    ap.add_argument("--out", default="")
    ap.add_argument("--dry-run", action="store_true", help="a tiny --model folder, 2 windows of 32 tokens")
    ap.add_argument("--tabulate", action="store_true", help="rewrite the table from a finished run (the "
                    "certificates and seconds --out's .json names), running nothing")
    args = ap.parse_args()
    if args.dry_run:
        args.nsamples, args.seqlen, args.bound_iters, args.plain_tokens = 2, 32, 20, 64
    work = Path(args.work)
    name = "dry-run" if args.dry_run else (Path(args.model).name if args.model else "smollm2")
    out = Path(args.out or ROOT / "docs" / "results" / f"certify_model_{name}.md")
    if args.tabulate:
        rows = tabulated(out)
    else:
        work.mkdir(parents=True, exist_ok=True)
        dense = dense_folder(args.model, work)
        rows = [certificate(n, f, args, work, dense) for n, f in checkpoints(args, work, dense).items()]
    out.write_text(table(rows, args))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
