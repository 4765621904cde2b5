"""Run every bad-input case (validation/bad_input_cases.py, asserted by tests/commands/test_bad_input.py) through the command line and write
docs/reliability.md: the case, the exit code and the one line the user sees.

Usage: python validation/reliability_table.py   (a few seconds; tiny random model, no ../shared)
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from bad_input_cases import (CERTIFY_USAGE, EVAL_USAGE, PATH_CASES, PRUNE_USAGE, build_tiny, eval_args,
                             layer_files, path_case, prune_args)

from optprune.commands import main

INTRO = """# Reliability: what a user sees when something is wrong

optprune never returns a result it cannot stand behind.  Every argument, path, method/pattern pair
and pattern fit is checked before a model or data is loaded; the exit code says whose move it is:

* **2**: the input is wrong (fix the command or the file); one line `optprune: error: ...`.
* **1**: the run failed (disk, solver, evaluation); one line `optprune: failed: ...`, and what was
  finished is kept (the resume state, or the saved model when only the evaluation failed).

**Resume and output folder.**  `<out>/.resume` and the finished output carry the run's fingerprint:
optprune version, method and options, pattern and sparsity, refit, calibration source, nsamples,
seqlen, seed, dtype, device type, batch, row shards, ranks, the model source, a hash of its config
and of its weights' names, shapes and sampled values, and a hash of the calibration windows.  The
settings are compared before the model is loaded, the rest after; a difference is refused with
each differing entry named, and `--no-resume` starts over.  Every resume file is written to a
temporary name and renamed; the report is written before its block, so a kill between the two
recomputes that block.  The model is saved into `<out>/.staging`, renamed into place file by file,
and the completion marker `optprune_complete.json` is written last: a folder without it is never
taken for a finished output, and rerunning the same command finishes it.  A kill -9 after a block
and one inside the final save both resume to a `model.safetensors` byte-identical to an
uninterrupted run (`tests/checkpoints/test_faults.py`); the report's `sessions` lists each process's seconds
and `prune_seconds` adds them up.

**Exact results.**  Every exact method (`milp`, `oa`, `refit-oa`) reports one status from
`optprune.result.STATUSES`; only `optimal` comes with an optimum.  Any other status shows the
incumbent and the proven lower bound (at least 0: every objective is a squared norm) and the
largest gap they allow, never an optimum.

This file is written by `python validation/reliability_table.py`, which runs the cases of
`validation/bad_input_cases.py` (asserted by `tests/commands/test_bad_input.py`) through the command line.  Read-only folders are refused by the same
check as a folder under a file (`os.access`); as root (CI) permissions are not enforced, so that
case is shown with a file in the way instead.
"""

FAULTS = [
    ("`.resume` left by `sparsegpt --sparsity 0.7`, then `wanda --sparsity 0.3` into the same --out", "2",
     "`optprune: error: <out>/.resume holds a resume state of a different run (method: 'sparsegpt' -> 'wanda'; "
     "sparsity: 0.7 -> 0.3): rerun with the same settings, or start over (--no-resume; resume=False in the Python "
     "API)`"),
    ("same command again after a finished run", "0", "`<out> already holds this run's finished output: nothing to do`"),
    ("other settings into a finished output", "2", "`optprune: error: --out <out> holds the finished output of a "
     "different run (...): choose another folder or delete it`"),
    ("a real full disk (tmpfs of 2 MB or 9 MB as --out: torch.save's zip-writer error in the resume state, "
     "safetensors' SafetensorError in the final save)", "1", "`optprune: failed: [Errno 28] no space left on the "
     "device of <out>/.resume/block001.pt (0.0 MiB free): what was finished is kept; free some space and rerun "
     "the same command`; the rerun is byte-identical to a run that never failed (tested on a real 64 KiB tmpfs "
     "where the test may mount one)"),
    ("a real read-only folder as --out (a tmpfs remounted read-only; root ignores permission bits, not that)",
     "2", "`optprune: error: cannot write into <out>: <out> is not a writable folder`, before the model loads"),
    ("a write that fails with space left (any OSError, RuntimeError or SafetensorError of a writer)", "1",
     "`optprune: failed: could not write <path>: <the library's first line>`"),
    ("`--eval-ppl` fails after pruning", "1", "`optprune: failed: evaluation stopped (...); the pruned model is saved "
     "in <out>: evaluate it with optprune eval --model <out>`"),
    ("a second run on an --out that a running prune holds", "2", "`optprune: error: --out <out> is in use by "
     "another optprune run (pid N): wait for it to finish, or choose another folder` (an exclusive flock on "
     "`<out>/.lock`, released when the run ends or its process dies)"),
    ("same command with `--eval-ppl` after a finished run without it", "0", "the saved model is evaluated and the "
     "report and model card get the perplexity (then: nothing to do)"),
    ("a float32 checkpoint pruned with the default `--dtype auto` (bfloat16 forward passes)", "0", "saved in "
     "float32, the report's `checkpoint.dtype` says so: every tensor the run left alone (embeddings, norms, head, "
     "a mask-only method's kept weights) is the input's own value bit for bit; a bfloat16 input stays bfloat16 "
     "(tests/checkpoints/test_checkpoint_format.py)"),
    ("`prune --dtype float16` where activations pass float16's range", "1", "`optprune: failed: layer "
     "1.self_attn.q_proj[0:32]: the Gram of its inputs holds NaN or Inf: the forward passes overflowed (float16 "
     "ends at 65504); prune in bfloat16 or float32 (--dtype)`"),
    ("a perplexity that is not finite (fp16 overflow)", "1", "`optprune: failed: evaluation stopped (FloatingPointError: "
     "perplexity is nan: the forward passes overflowed in torch.float16; evaluate in bfloat16 or float32 (--dtype)); "
     "the pruned model is saved ...`; `optprune eval` exits 1 with the same line, never `ppl nan`"),
    ("Ctrl-C or SIGTERM during `prune` (pruning, saving or `--eval-ppl`)", "130", "`optprune: interrupted: what "
     "was finished is kept in --out; rerun the same command to resume (bit-identically)`"),
    ("Ctrl-C or SIGTERM during `certify`, inside a HiGHS solve (a root LP of 20 s that checks for interrupts "
     "seconds apart)", "130", "`optprune: interrupted: nothing was written` within 1-2 s of the signal (HiGHS "
     "runs in its own thread and is asked to stop), not at the time limit (tests/commands/test_cli.py)"),
    ("`certify --time-limit 2` on a hard sub-block (8 rows x 128 columns, one method)", "0", "9.1 s in all: "
     "the exact solve and the relaxation bound each stop at 2 s (the relaxation used to get the exact solve's "
     "seconds plus 10), the rest is start-up and the bounds"),
    ("`certify --dense A --pruned B` where B was not pruned from A", "0", "the certificates, then `optprune: warning: "
     "N layer(s) of the checkpoint err more than all-zero weights would (...): was it pruned from --dense A?`"),
    ("`certify --dense --pruned` with a pattern no layer's mask holds", "2", "`optprune: error: no layer's mask is "
     "2:4 (...): claim the pattern the checkpoint was pruned to (--pattern, --sparsity)`; some layers only: their "
     "names and exit 1"),
    ("`certify --dense M --pruned P --neighbourhood 3` (or `--full-row-bounds`, `--dnn-iters`) without `--subblocks`; "
     "`--bound-iters 0`; a rerun with another `--bound` beside the first run's `<json>.partial` "
     "(tests/commands/test_certify_model.py)", "2", "`optprune: error: --neighbourhood: options of the sub-block "
     "certificates; add --subblocks (the default --dense certificate bounds every row of every layer)`; "
     "`--bound-iters 0: give at least 1 step`; `<json>.partial holds layers of another certificate (other model, "
     "masks, calibration, pattern or bound): delete it, or give another --json`"),
    ("`certify --dense <llama> --pruned <opt>`, `--subblocks --rows 0,20`, `--window 1000`, transposed or non-0/1 `--masks` "
     "(tests/commands/test_certify_checkpoint.py)", "2", "before any calibration: `optprune: error: --pruned <opt> is "
     "a opt of 4 blocks, the dense model a llama of 2: not pruned from it`; `--rows 0,20: layer 0.self_attn.k_proj "
     "has 16 rows (0..15)`; `--window 1000: layer 0.self_attn.q_proj has 32 columns`; `--masks <f>: mask "
     "'0.self_attn.k_proj' is (32, 16), the layer's weight (16, 32) (transposed: masks are out x in, as the "
     "weight)`; `... holds values other than 0/1 (True = kept)`"),
    ("the Python API given a non-model (`optprune.prune(\"llama\", ...)`, an `nn.Linear`), a misspelt setting, or "
     "`evaluate(net, None)` (tests/test_api.py)", "-", "`ArchitectureError: optprune prunes transformers causal LMs "
     "(a PreTrainedModel with a config), got str: ...`; `TypeError: optprune.prune has no setting 'sparsityy': did "
     "you mean 'sparsity' or 'attn_sparsity'?`; `TypeError: tokenizer must be the model's tokenizer (callable on "
     "text), got NoneType`"),
    ("`optprune.prune(net, tok, calib={'text': [...]})` (a dict: iterating it gives its keys)", "-",
     "`ValueError: calibration texts as a dict (keys ['text']): pass its list of strings (calib=d['text']) or the "
     "Dataset itself` (it used to calibrate on the word 'text': 'corpus has 4 tokens')"),
    ("the Python API on a resume state of other settings", "-", "`StaleStateError: ... rerun with the same settings, "
     "or start over (--no-resume; resume=False in the Python API)`"),
    ("`optprune eval --model <out>` on an unfinished run's folder", "2", "`optprune: error: --model <out> holds an "
     "unfinished optprune run (no saved model yet): rerun its prune command to finish it`"),
    ("plain `AutoModelForCausalLM.from_pretrained` on a `--save-format compressed` output", "-", "transformers' "
     "`ValueError: The checkpoint you are trying to load has model type optprune-compressed but Transformers does "
     "not recognize this architecture` (never its bitmask linears initialised at random); `optprune.load_pretrained` "
     "and every optprune command load it"),
    ("kill -9 after a block, or inside the final save", "-9", "no completion marker; rerunning the command "
     "finishes bit-identical to an uninterrupted run, `sessions` holds both processes' seconds"),
]


def run(argv: list[str], tmp: Path | None = None) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("optprune")]
    line = lines[-1] if lines else ""
    return code, line.replace(str(tmp), "<tmp>") if tmp else line


def rows_for(cases, make_argv, tmp: Path) -> list[str]:
    out = []
    for case in cases:
        code, line = run(make_argv(case), tmp)
        out.append(f"| `{' '.join(case[-2]) or '(defaults)'}` | {code} | `{line.replace('|', '/')}` |")
    return out


def main_table() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = build_tiny(tmp / "tiny")
        prune = rows_for(PRUNE_USAGE, lambda c: prune_args(tiny, tmp / "out", c[0]), tmp)
        paths = []
        for k, (case, _) in enumerate(PATH_CASES):
            (tmp / f"p{k}").mkdir()
            out, extra = path_case(case, tmp / f"p{k}")
            code, line = run(prune_args(tiny, out, extra), tmp)
            paths.append(f"| {case} | {code} | `{line}` |")
        evals = rows_for(EVAL_USAGE, lambda c: eval_args(tiny, c[0]), tmp)
        files = layer_files(tmp)
        certify = rows_for([(f, e, m) for f, e, m in CERTIFY_USAGE],
                           lambda c: ["certify", "--layer", str(files[c[0]]), *c[1]], tmp)
    head = "| arguments | exit | what the user sees |\n|---|---|---|\n"
    certify = [row.replace("| `", f"| {case[0]}: `", 1) for row, case in zip(certify, CERTIFY_USAGE)]
    faults = "| case | exit | what the user sees |\n|---|---|---|\n" + "\n".join(
        f"| {c} | {e} | {s} |" for c, e, s in FAULTS)
    return (INTRO + "\n## `optprune prune` on a tiny Llama (nothing loaded, nothing written)\n\n" + head
            + "\n".join(prune) + "\n" + "\n".join(paths)
            + "\n\n## `optprune eval` on a tiny Llama (nothing loaded)\n\n" + head + "\n".join(evals)
            + "\n\n## `optprune certify` on layer files (`report` gives the same lines)\n\n"
            + head.replace("arguments", "layer file: arguments") + "\n".join(certify)
            + "\n\n## Stale state and faults (tests/commands/test_bad_input.py, tests/checkpoints/test_faults.py)\n\n" + faults + "\n")


if __name__ == "__main__":
    (ROOT / "docs" / "reliability.md").write_text(main_table())
    print("wrote docs/reliability.md")
