"""Bad input, stale state and faults: every case gets one clear line and the right exit code
(2: fix the command or the file; 1: the run failed), before any model or data is loaded where
the case allows it.  The table of cases is published in docs/reliability.md."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from optprune.cli import main

PRUNE_USAGE = [   # (extra arguments replacing the defaults, message)
    (["--method", "banana"], "unknown method 'banana'"),
    (["--method", "spap"], "spap handles column (structured) patterns, not per-row"),
    (["--method", "sparsegpt", "--pattern", "structured"], "sparsegpt handles unstructured"),
    (["--sparsity", "1.0"], "sparsity must lie in [0, 1)"),
    (["--sparsity", "nan"], "sparsity must lie in [0, 1)"),
    (["--pattern", "2:4", "--sparsity", "0.7"], "contradicts 2:4"),
    (["--pattern", "3:7"], "needs the input size (32) to be divisible by M=7"),
    (["--pattern", "4:2"], "N:M needs 0 < N < M"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--device", "banana"], "unknown device 'banana'"),
    (["--device", "cuda:99"], "--device cuda:99: "),
    (["--nsamples", "0"], "nsamples must be >= 1, got 0"),
    (["--row-shards", "0"], "row_shards must be >= 1, got 0"),
    (["--batch", "0"], "batch must be >= 1, got 0"),
    (["--target", "banana"], "target must be one of pruned, dense, got 'banana'"),
    (["--allocation-cost", "banana"], "allocation_cost must be one of error, sensitivity, loss"),
    (["--method-arg", "iters=3"], "wanda has no option iters"),
    (["--calib", "/nonexistent/corpus.txt"], "--calib /nonexistent/corpus.txt: no such file"),
    (["--data-dir", "/nonexistent/data"], "no data folder at /nonexistent/data"),
    (["--target-ridge", "0"], "target_ridge must be > 0"),
    (["--reconstruct", "block", "--reconstruct-epochs", "0"], "reconstruct_epochs must be >= 1"),
    (["--method", "admm", "--pattern", "structured"], "admm handles entrywise"),
    (["--method", "admm", "--method-arg", "warm_start=admm"], "unknown warm start 'admm'"),
    (["--allocation", "milp", "--pattern", "2:4"], "2:4 stays uniform per layer"),
    (["--allocation", "milp", "--allocation-step", "0"], "need 0 < step <= spread"),
    (["--allocation", "milp", "--allocation-bound", "attention=0.7:0.2"], "need 0 <= LO <= HI <= 1"),
    (["--allocation", "owl", "--allocation-bound", "mlp=:0.5"], "it needs --allocation milp"),
    (["--allocation", "milp", "--allocation-windows", "9"], "allocation_windows must be between 0"),
    (["--seqlen", "4096"], "--seqlen 4096 is longer than this model's max_position_embeddings (128)"),
    (["--save-format", "bitmask"], "--save-format 'bitmask': choose from dense, compressed, plain"),
]


def _prune_args(tiny, out, extra=()):
    model_dir, data = tiny
    base = {"--model": str(model_dir), "--method": "wanda", "--pattern": "per-row", "--nsamples": "4",
            "--seqlen": "32", "--data-dir": str(data), "--out": str(out), "--device": "cpu", "--dtype": "float32"}
    extra = list(extra)
    flags = [a for a in extra if a.startswith("--")]
    args = [x for k, v in base.items() if k not in flags for x in (k, v)]
    return ["prune", *args, *extra]


@pytest.mark.parametrize("extra,message", PRUNE_USAGE, ids=[" ".join(e) for e, _ in PRUNE_USAGE])
def test_prune_usage_errors_exit_2_with_one_line_and_write_nothing(tiny, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out, extra)) == 2
    err = capsys.readouterr().err
    assert _one_line(err, message) and "Loading weights" not in err, err
    assert not out.exists() or not any(out.iterdir())


def _one_line(err: str, message: str) -> bool:
    """Exactly one line from optprune (progress bars of libraries aside), holding `message`."""
    lines = [line for line in err.splitlines() if line.startswith("optprune")]
    return len(lines) == 1 and message in lines[0]


PATH_CASES = [   # (case, message)
    ("--model is a missing folder", "no such folder"),
    ("--model is an unreachable hub id", "--model no-such-org/no-such-model-xyz"),
    ("--out is a file", "is a file"),
    ("--out lies under a file", "is not a writable folder"),
    ("--out is an unrelated non-empty folder", "is not empty and holds no optprune run"),
]


def path_case(case: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """(--out, extra arguments) of a PATH_CASES case, with the files it needs made."""
    out = tmp_path / "out"
    if case == "--model is a missing folder":
        return out, ["--model", str(tmp_path / "nope")]
    if case == "--model is an unreachable hub id":
        return out, ["--model", "no-such-org/no-such-model-xyz"]
    if case == "--out is a file":
        out.write_text("x")
    elif case == "--out lies under a file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    else:
        out.mkdir()
        (out / "config.json").write_text("{\"mine\": 1}")
    return out, []


@pytest.mark.parametrize("case,message", PATH_CASES, ids=[c for c, _ in PATH_CASES])
def test_prune_path_errors_exit_2_before_loading(tiny, tmp_path, capsys, case, message):
    out, extra = path_case(case, tmp_path)
    assert main(_prune_args(tiny, out, extra)) == 2
    err = capsys.readouterr().err
    assert _one_line(err, message) and "Loading weights" not in err, err
    if "unrelated" in case:
        assert (out / "config.json").read_text() == "{\"mine\": 1}" and len(list(out.iterdir())) == 1


def test_stale_resume_state_is_refused_and_no_resume_starts_over(tiny, tmp_path, capsys, monkeypatch):
    """The issue's case: a sparsegpt 0.7 run that died leaves .resume; wanda 0.3 into the same folder."""
    import optprune.pipeline.run as run

    out = tmp_path / "out"
    monkeypatch.setattr(run.OutputFolder, "save", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    assert main(_prune_args(tiny, out, ["--method", "sparsegpt", "--sparsity", "0.7"])) == 1
    assert "No space left" in capsys.readouterr().err
    assert (out / ".resume" / "block001.pt").exists()
    monkeypatch.undo()
    assert main(_prune_args(tiny, out, ["--sparsity", "0.3"])) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "method: 'sparsegpt' -> 'wanda'" in err and "sparsity: 0.7 -> 0.3" in err
    assert main(_prune_args(tiny, out, ["--sparsity", "0.3", "--no-resume"])) == 0
    report = json.loads((out / "optprune_report.json").read_text())
    assert report["method"] == "wanda" and report["achieved_sparsity"] == pytest.approx(0.3, abs=0.02)
    assert len(report["sessions"]) == 1


def test_finished_output_is_kept_or_refused(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out)) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(_prune_args(tiny, out)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(_prune_args(tiny, out, ["--sparsity", "0.6"])) == 2
    assert "finished output of a different run" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before and (out / "optprune_complete.json").exists()


def test_failed_evaluation_keeps_the_saved_model(tiny, tmp_path, capsys, monkeypatch):
    import optprune.pipeline.run as run

    def broken(*a, **k):
        raise RuntimeError("evaluation blew up")

    monkeypatch.setattr(run, "eval_ppl", broken)
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out, ["--eval-ppl"])) == 1
    err = capsys.readouterr().err
    assert "evaluation blew up" in err and "the pruned model is saved" in err
    assert (out / "model.safetensors").exists() and (out / "optprune_complete.json").exists()
    assert not (out / ".resume").exists()


EVAL_USAGE = [   # (extra arguments of optprune eval on the tiny model, message)
    (["--zeroshot", "mmlu"], "unknown zero-shot task 'mmlu'"),
    (["--zeroshot", "arc_easy", "--zeroshot-scorer", "exact"], "--zeroshot-scorer 'exact': choose from auto, harness, "
                                                                "builtin"),
]


def _eval_args(tiny, extra):
    model_dir, data = tiny
    return ["eval", "--model", str(model_dir), "--ppl", "", "--data-dir", str(data), *extra]


@pytest.mark.parametrize("extra,message", EVAL_USAGE, ids=[" ".join(e) for e, _ in EVAL_USAGE])
def test_eval_usage_errors_exit_2_with_one_line_before_loading(tiny, capsys, extra, message):
    assert main(_eval_args(tiny, extra)) == 2
    err = capsys.readouterr().err
    assert _one_line(err, message) and "Loading weights" not in err, err


def test_eval_refuses_unwritable_json_before_loading(tiny, tmp_path, capsys):
    model_dir, data = tiny
    assert main(["eval", "--model", str(model_dir), "--data-dir", str(data), "--json",
                 str(tmp_path / "no" / "x.json")]) == 2
    assert "no folder" in capsys.readouterr().err


# -- certify / report on layer files ---------------------------------------------------------------

def _layer_files(folder: Path) -> dict:
    torch.manual_seed(0)
    W, X = torch.randn(4, 16), torch.randn(16, 64)
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    eig = torch.linspace(-18.9, 40.0, 16)
    indefinite = q @ torch.diag(eig) @ q.T
    indefinite.diagonal().clamp_(min=1.0)          # a positive diagonal does not make it a Gram
    files = {"ok": (W, X @ X.T), "indefinite": (W, indefinite), "zero W": (torch.zeros(4, 16), X @ X.T),
             "zero G": (W, torch.zeros(16, 16)), "NaN": (W.clone().index_fill_(1, torch.tensor([3]), float("nan")),
                                                       X @ X.T)}
    paths = {}
    for name, (w, g) in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.safetensors"
        save_file({"l.weight": w, "l.gram": 0.5 * (g + g.T)}, str(paths[name]))
    paths["not safetensors"] = folder / "text.safetensors"
    paths["not safetensors"].write_text("hello")
    return paths


CERTIFY_USAGE = [   # (file, extra arguments, message)
    ("not safetensors", [], "is not a safetensors layer file"),
    ("indefinite", ["--method", "maiht,sparsegpt"], "G is not positive semidefinite"),
    ("zero W", [], "W is zero, so every mask has error 0"),
    ("zero G", [], "G is zero, so every mask has error 0"),
    ("NaN", [], "NaN"),
    ("ok", ["--rows", ""], "give at least one row"),
    ("ok", ["--rows", "-1"], "none negative"),
    ("ok", ["--rows", "0,0"], "each once"),
    ("ok", ["--rows", "9"], "layer l has rows 0..3"),
    ("ok", ["--window", "0"], "at least one column"),
    ("ok", ["--window", "40"], "wider than layer l (16 columns)"),
    ("ok", ["--workers", "0"], "--workers must be >= 1"),
    ("ok", ["--time-limit", "0"], "--time-limit > 0"),
    ("ok", ["--dnn-iters", "-1"], "--dnn-iters -1: give the ADMM steps per row"),
    ("ok", ["--device", "banana"], "unknown device 'banana'"),
    ("ok", ["--json", "/nonexistent/x.json"], "no folder /nonexistent"),
    ("ok", ["--method", "spap"], "spap handles column (structured) patterns"),
    ("ok", ["--method", "banana"], "unknown method 'banana'"),
    ("ok", ["--pattern", "2:3"], "divisible by M=3"),
    ("ok", ["--pattern", "2:4", "--sparsity", "0.6"], "contradicts 2:4"),
]


@pytest.mark.parametrize("file,extra,message", CERTIFY_USAGE,
                         ids=[f"{f} {' '.join(e)}" for f, e, _ in CERTIFY_USAGE])
def test_certify_and_report_usage_errors_exit_2_with_one_line(tmp_path, capsys, file, extra, message):
    path = _layer_files(tmp_path)[file]
    commands = [["certify"]] + ([["report", "--out", str(tmp_path / "rep")]] if "--json" not in extra else [])
    for command in commands:
        assert main([*command, "--layer", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert _one_line(err, message), err
        assert not (tmp_path / "rep").exists()


def test_default_window_fits_a_narrow_layer_and_no_banner_reaches_stdout(tmp_path, capsys):
    path = _layer_files(tmp_path)["ok"]
    assert main(["certify", "--layer", str(path), "--method", "wanda"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("layer `l`") and "16 columns" in out and "HiGHS" not in out


@pytest.mark.parametrize("exact", ["milp", "oa", "refit-oa"])
def test_time_limited_certificate_reports_incumbent_and_bound_not_an_optimum(tmp_path, capsys, exact):
    import math

    path = _layer_files(tmp_path)["ok"]
    assert main(["certify", "--layer", str(path), "--rows", "0,1,2", "--time-limit", "0.001", "--exact", exact,
                 "--method", "wanda", "--json", str(tmp_path / "r.json")]) == 0
    row = json.loads((tmp_path / "r.json").read_text())[0]["methods"][0]
    assert row["block_status"] == "time_limit"           # 48 free decisions cannot be closed in 1 ms
    assert math.isnan(row["block_optimum"]) and math.isnan(row["block_gap"])
    assert 0.0 <= row["block_lower_bound"] <= row["block_incumbent"] <= row["block_value"] + 1e-9
    assert "(best" in capsys.readouterr().out


def test_sparsity_zero_leaves_every_method_s_weights_untouched():
    from optprune import Pattern, random_problem
    from optprune.solvers import METHODS, prune_layer

    prob = random_problem(4, 16, seed=1)
    for method in sorted(METHODS):
        pattern = Pattern("structured" if method == "spap" else "per-row", 0.0)
        res = prune_layer(prob, pattern, method)
        assert res.mask.all() and torch.equal(res.weight, prob.W), method


def test_sparsegpt_takes_n_m_groups_that_do_not_divide_its_block():
    from optprune import Pattern, check_mask, random_problem
    from optprune.solvers import prune_layer

    prob = random_problem(3, 3 * 50, seed=2)          # 150 columns: 2:3 groups straddle 128
    res = prune_layer(prob, Pattern.parse("2:3"), "sparsegpt")
    check_mask(res.mask, Pattern.parse("2:3"))
    assert prob.relative_error(W_hat=res.weight) < prob.relative_error(res.mask)
