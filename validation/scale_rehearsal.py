"""Rehearsal of the 8B path: real 8B shapes, random weights, the best recipe, through the CLI.

For each shape (Llama-3.1-8B and Qwen3-8B: their configs' sizes, vocabulary included, untied head) a model of
K blocks (`--blocks`, 4 by default) is written to disk as bfloat16 safetensors with a byte-level tokenizer (a
child process; the weights are random, normal(0, 0.02)).  `optprune prune` then runs on it as a user would:
`--recipe best` (SparseGPT + block reconstruction + sensitivity-priced MILP allocation) at 50% per-row,
`--mmap-weights`, `--dtype bfloat16`, `--nsamples` x `--seqlen` windows of the shipped C4 sample.  Measured:
seconds per pass per block (from the run's report: pricing pass, forwards, Grams, solves, dense stream,
reconstruction, propagation, I/O), the prune process's peak host RSS (`os.wait4` on that process alone), its peak
accelerator memory, and the bytes of the written model and of the output.  The full model (32 or 36 blocks,
128 windows) is projected from the per-block figures: passes over the data scale with the windows, solves
do not; the table labels it a projection.
`--menu-step` coarsens the allocation's menu (the pricing pass solves every menu sparsity of every layer):
the table says when it differs from the recipe's default, and the projection rescales the pricing pass to
the default menu.  `--dry-run` runs the same steps on a tiny shape (CI keeps the script working).
Writes docs/results/scale_rehearsal_<device>.md (+ .json).
Usage: python validation/scale_rehearsal.py [--shapes llama3.1-8b,qwen3-8b] [--blocks 4] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["--recipe", "best", "--pattern", "per-row", "--sparsity", "0.5"]
DEFAULT_MENU_STEP = 0.05            # the published best recipe's menu (smollm2_best_*.md)
SHAPES = {
    "llama3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    "qwen3-8b": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                     rope_theta=1000000.0, max_position_embeddings=40960, rms_norm_eps=1e-6,
                     tie_word_embeddings=False),
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=False),
}
DATA_PASSES = ("forward", "grams", "propagate")                 # over every window
RECONSTRUCTION_PASSES = ("dense_propagate", "reconstruct")      # over the recipe's first reconstruct_windows


def write_model(shape: str, blocks: int, folder: Path) -> None:
    """`shape` truncated to `blocks` blocks, random bf16 weights, and a byte-level tokenizer, saved in folder."""
    import torch
    import transformers as T
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    sizes = dict(SHAPES[shape], num_hidden_layers=blocks, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = T.AutoConfig.for_model(sizes.pop("model_type"), **sizes)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):      # random init is quicker there
        net = T.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    net.save_pretrained(folder)
    vocab = {ch: i + 3 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({"<pad>": 0, "<s>": 1, "</s>": 2})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>").save_pretrained(folder)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and ".resume" not in f.parts)


def measured_child(cmd: list[str], log: Path) -> tuple[int, float, dict]:
    """(exit status, seconds, memory in GiB) of a child process alone: `peak_rss` as the kernel counts it
    (os.wait4's ru_maxrss: file pages mapped from the model's safetensors included, which the kernel may drop
    and read again), and `peak_anon` / `peak_file`, the anonymous and file-backed parts sampled every 0.2 s
    (/proc/<pid>/status RssAnon, RssFile): the anonymous part is what the run must hold.  The child is killed if
    this process is stopped first (a time limit's SIGTERM), so no orphan keeps the device."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))))
        peaks = {"RssAnon": 0, "RssFile": 0}
        sampler = threading.Thread(target=sample_memory, args=(proc.pid, peaks, log), daemon=True)
        sampler.start()
        reaped = False
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            reaped = True
        finally:
            if not reaped:
                proc.kill()
                proc.wait()
    memory = dict(peak_rss=usage.ru_maxrss / 2 ** 20, peak_anon=peaks["RssAnon"] / 2 ** 20,
                  peak_file=peaks["RssFile"] / 2 ** 20)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, dict(memory, peak_anon_during=peaks["at"])


def sample_memory(pid: int, peaks: dict, log: Path) -> None:
    """The most of each of `peaks`' /proc/<pid>/status fields (kB) until the process ends, and in peaks['at']
    the log's last line when the anonymous part peaked (the pass that holds the most).  The timeline goes to
    <log>.mem.tsv: seconds, anonymous and file MiB, the log's last line, whenever the anonymous part moved by
    more than 64 MiB since the last entry."""
    status = Path(f"/proc/{pid}/status")
    peaks["at"] = ""
    t0, shown = time.perf_counter(), -1 << 30
    with open(str(log) + ".mem.tsv", "w") as timeline:
        while True:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except (OSError, ValueError):
                return
            if fields.get("State", "").strip().startswith("Z"):
                return
            kb = {key: int(fields.get(key, "0 kB").split()[0]) for key in ("RssAnon", "RssFile")}
            if abs(kb["RssAnon"] - shown) > 64 << 10:
                shown = kb["RssAnon"]
                timeline.write(f"{time.perf_counter() - t0:.1f}\t{kb['RssAnon'] >> 10}\t{kb['RssFile'] >> 10}\t"
                               f"{last_line(log)}\n")
                timeline.flush()
            if kb["RssAnon"] > peaks["RssAnon"]:
                peaks["at"] = last_line(log)
            for key, value in kb.items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.2)


def last_line(log: Path) -> str:
    """The log's last non-empty line (its last 4 kB read)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            tail = f.read().decode(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(tail) if line.strip()), "")


def rehearse(shape: str, args, work: Path) -> dict:
    """Write the model, prune it through the CLI, and read the figures back (each child's log in args.logs)."""
    model, out, logs = work / f"{shape}-model", work / f"{shape}-out", Path(args.logs or work)
    logs.mkdir(parents=True, exist_ok=True)
    print(f"{shape}: writing {args.blocks} blocks", flush=True)
    rc, write_s, _ = measured_child([sys.executable, __file__, "--write", shape, str(args.blocks), str(model)],
                                    logs / f"{shape}-write.log")
    if rc:
        raise SystemExit(f"writing {shape} failed:\n" + (logs / f"{shape}-write.log").read_text()[-3000:])
    print(f"{shape}: written in {write_s:.0f} s; pruning", flush=True)
    cmd = [sys.executable, "-m", "optprune", "prune", "--model", str(model), "--out", str(out), *RECIPE,
           "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--mmap-weights", "--dtype", "bfloat16",
           "--device", args.device, "--allocation-step", str(args.menu_step), "--batch", str(args.batch)]
    rc, prune_s, memory = measured_child(cmd, logs / f"{shape}-prune.log")
    if rc:
        raise SystemExit(f"pruning {shape} failed:\n" + (logs / f"{shape}-prune.log").read_text()[-3000:])
    report = json.loads((out / "optprune_report.json").read_text())
    return dict(shape=shape, blocks=args.blocks, write_seconds=write_s, model_bytes=folder_bytes(model),
                out_bytes=folder_bytes(out), prune_seconds=prune_s, peak_anon_during=memory.pop("peak_anon_during"),
                **{f"{k}_gib": v for k, v in memory.items()},
                command="optprune prune --model <written> " + " ".join(cmd[cmd.index("--out") + 2:]),
                **per_block(report, args))


def per_block(report: dict, args) -> dict:
    """Mean seconds per block of each pass, the pricing pass per block, the peak accelerator memory, and the
    full-model projection (module doc)."""
    run = report.get("run", report)
    breakdown = run["breakdown"]
    passes = sorted({k for times in breakdown.values() for k in times})
    mean = {k: sum(t.get(k, 0.0) for t in breakdown.values()) / len(breakdown) for k in passes}
    pricing = run.get("allocation", {}).get("seconds", 0.0) / args.blocks
    peaks = [r.get("peak_accel_bytes") or 0 for r in run.get("layers", [])]
    return dict(per_block=mean, pricing_per_block=pricing, input_seconds=run.get("input_seconds", 0.0),
                peak_accel_gib=max(peaks, default=0) / 2 ** 30, menu_step=args.menu_step, windows=args.nsamples,
                seqlen=args.seqlen)


def projection(row: dict, full_blocks: int, full_windows: int = 128) -> float:
    """Seconds of the whole model at `full_windows` windows from the measured per-block figures: data passes
    scale with the windows (the dense stream and the reconstruction with the windows up to the recipe's
    reconstruct_windows), solves do not; the pricing pass (its layer solves at every menu sparsity dominate,
    and the recipe prices on 8 windows whatever the run's count) scales with the default menu's size only."""
    from optprune.recipes import QUICK_RECONSTRUCTION
    used = QUICK_RECONSTRUCTION["reconstruct_windows"]
    scale = full_windows / row["windows"]
    scales = dict.fromkeys(DATA_PASSES, scale)
    scales.update(dict.fromkeys(RECONSTRUCTION_PASSES, min(full_windows, used) / min(row["windows"], used)))
    menu = row["menu_step"] / DEFAULT_MENU_STEP
    per_block = sum(v * scales.get(k, 1.0) for k, v in row["per_block"].items())
    return full_blocks * (per_block + row["pricing_per_block"] * menu) + row["input_seconds"] * scale


def table(rows: list[dict], device: str, args) -> str:
    note = "" if args.menu_step == DEFAULT_MENU_STEP else (
        f" The allocation menu's step is {args.menu_step} (the recipe's default is {DEFAULT_MENU_STEP}): the pricing "
        "pass solves every menu sparsity of every layer, so the projection multiplies it by the ratio.")
    lines = [f"# Scale rehearsal ({device})", "",
             f"Machine: {device}. Random bf16 weights in the real configs' shapes (vocabulary included), truncated to "
             f"K blocks; the best recipe ({' '.join(RECIPE)}) with --mmap-weights on {args.nsamples} x "
             f"{args.seqlen} C4 windows. Commands: "
             + "; ".join(f"`python validation/scale_rehearsal.py {a}`" for a in unique(r["argv"] for r in rows))
             + f".{note}", "",
             "Peak host RSS is the kernel's count for the prune process, pages mapped from the model's safetensors "
             "included (clean file pages the kernel drops under pressure and reads again); of it, the anonymous "
             "part (sampled every 0.2 s) is what the run must hold in RAM.", "",
             "| shape | blocks | model on disk | output | prune s | peak host RSS | of it anonymous | of it file | "
             "peak accel. | pricing s/block | " + " | ".join(f"{k} s/block" for k in PASS_COLUMNS) + " |",
             "|---" * (10 + len(PASS_COLUMNS)) + "|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['blocks']} | {r['model_bytes'] / 2 ** 30:.2f} GiB | "
                     f"{r['out_bytes'] / 2 ** 30:.2f} GiB | {r['prune_seconds']:.0f} | {r['peak_rss_gib']:.2f} GiB | "
                     f"{r['peak_anon_gib']:.2f} GiB | {r['peak_file_gib']:.2f} GiB | "
                     f"{r['peak_accel_gib']:.2f} GiB | {r['pricing_per_block']:.1f} | "
                     + " | ".join(f"{r['per_block'].get(k, 0.0):.1f}" for k in PASS_COLUMNS) + " |")
    lines += [""] + [f"Anonymous peak of {r['shape']} during: `{r.get('peak_anon_during') or '?'}`."
                     for r in rows]
    lines += [""] + [n for n in unique(r.get("note", "") for r in rows) if n]
    lines += ["", "**Projection** (not measured): the whole model at 128 windows from the per-block figures above "
              "(data passes x 128 / windows, the dense stream and the reconstruction x 32 / windows: the recipe "
              "reconstructs on the first 32; solves as measured, pricing at the default menu).", "",
              "| shape | blocks | projected hours |", "|---|---|---|"]
    for r in rows:
        full = SHAPES[r["shape"]]["num_hidden_layers"]
        lines.append(f"| {r['shape']} | {full} | {projection(r, full) / 3600:.2f} |")
    return "\n".join(lines) + "\n"


def unique(items) -> list:
    """The items in their first order, each once."""
    return list(dict.fromkeys(items))


PASS_COLUMNS = ("forward", "grams", "solve", "dense_propagate", "reconstruct", "propagate", "io")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="llama3.1-8b,qwen3-8b")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--menu-step", type=float, default=DEFAULT_MENU_STEP)
    ap.add_argument("--work", default="", help="folder for the written models (default: a temporary one)")
    ap.add_argument("--out", default="", help="table path (default: docs/results/scale_rehearsal_<device>.md)")
    ap.add_argument("--logs", default="", help="folder for the children's logs (default: --work's temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="the tiny shape, 4 x 64 windows, 2 blocks")
    ap.add_argument("--note", default="", help="a sentence on the run's conditions, printed under the table")
    ap.add_argument("--append", action="store_true", help="keep the table's rows of other shapes or K (its .json)")
    ap.add_argument("--write", nargs=3, metavar=("SHAPE", "BLOCKS", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # a time limit stops the child too
    if args.write:
        write_model(args.write[0], int(args.write[1]), Path(args.write[2]))
        return 0
    if args.dry_run:
        args.shapes, args.blocks, args.nsamples, args.seqlen = "tiny", 2, 4, 64
    from optprune.config import resolve_device
    from optprune.parallel import machine_name
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or args.blocks < 1:
        raise SystemExit(f"--shapes from {', '.join(SHAPES)}; --blocks >= 1 (got {unknown or args.blocks})")
    device = machine_name() if resolve_device(args.device).type == "cpu" else torch_device_name()
    slug = "dry-run" if args.dry_run else "cpu" if resolve_device(args.device).type == "cpu" else device_slug(device)
    out = Path(args.out or ROOT / "docs" / "results" / f"scale_rehearsal_{slug}.md")
    with tempfile.TemporaryDirectory(dir=args.work or None) as work:
        rows = earlier_rows(out, shapes, args) if args.append else []
        for shape in shapes:                     # the table after each shape: a run cut short keeps what it measured
            rows.append(dict(rehearse(shape, args, Path(work)), argv=shown_argv(sys.argv[1:]), note=args.note))
            print(json.dumps(rows[-1]), flush=True)
            write_table(out, rows, device, args)
    return 0


def shown_argv(argv: list[str]) -> str:
    """The command as the table shows it: without --note's sentence (printed under the table) and without the
    scratch folders (--work, --logs), which change nothing measured."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--note", "--work", "--logs"):
            skip = True
        elif not a.startswith(("--note=", "--work=", "--logs=")):
            shown.append(a)
    return " ".join(shown)


def earlier_rows(out: Path, shapes: list[str], args) -> list[dict]:
    """The rows of the table's .json that this run does not measure again (another shape or K)."""
    path = out.with_suffix(".json")
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    return [dict(r, argv=r.get("argv", " ".join(saved.get("argv", []))), note=r.get("note", ""))
            for r in saved["rows"] if (r["shape"], r["blocks"]) not in {(s, args.blocks) for s in shapes}]


def write_table(out: Path, rows: list[dict], device: str, args) -> None:
    out.write_text(table(rows, device, args))
    out.with_suffix(".json").write_text(json.dumps(dict(device=device, argv=sys.argv[1:], rows=rows), indent=2))
    print(f"wrote {out}", flush=True)


def torch_device_name() -> str:
    import torch
    return torch.cuda.get_device_name()


def device_slug(device: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in device.lower()).strip("_")[:40]


if __name__ == "__main__":
    sys.exit(main())
