"""Bad input, stale state and faults: every case gets one clear line and the right exit code
(2: fix the command or the file; 1: the run failed), before any model or data is loaded where
the case allows it.  The table of cases is published in docs/reliability.md."""
import contextlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from optprune.commands import main

from bad_input_cases import (CERTIFY_USAGE, EVAL_USAGE, PATH_CASES, PRUNE_USAGE, eval_args as _eval_args,
                             layer_files as _layer_files, path_case, prune_args as _prune_args)

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
    import optprune.commands.prune as run

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


FULL_DISK_ERRORS = {   # what the libraries raised on a real full tmpfs (2 MB and 9 MB, issue 38 case 1)
    "resume state": ("torch.save", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                                                "100672 vs 100560")),
    "final save": ("transformers.modeling_utils.safe_save_file",
                   type("SafetensorError", (Exception,), {})("Error while serializing: I/O error: No space left on "
                                                             "device (os error 28)")),
}


@pytest.mark.parametrize("where", list(FULL_DISK_ERRORS))
def test_a_full_disk_is_one_line_and_the_rerun_resumes(tiny, tmp_path, capsys, monkeypatch, where):
    """A full disk: one line saying so (exit 1), never the library's traceback; what was finished is kept and
    the rerun with space is the same model as a run that never failed."""
    import importlib
    import shutil

    target, error = FULL_DISK_ERRORS[where]
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: (_ for _ in ()).throw(error))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1024))
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out)) == 1
    err = capsys.readouterr().err
    assert _one_line(err, "no space left on the device of") and "rerun the same command" in err, err
    assert (out / ".resume" / "report.json").exists() or where == "resume state"
    monkeypatch.undo()
    assert main(_prune_args(tiny, out)) == 0
    assert main(_prune_args(tiny, tmp_path / "clean")) == 0
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "clean" / "model.safetensors").read_bytes()


@contextlib.contextmanager
def small_tmpfs(folder: Path):
    """A 64 KiB tmpfs mounted at `folder` while the test runs (skipped where this process may not mount one)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_real_full_disk_is_one_line_and_the_rerun_is_identical(tiny, tmp_path, capsys):
    """A real tmpfs of 64 KiB as --out."""
    with small_tmpfs(tmp_path / "disk") as disk:
        assert main(_prune_args(tiny, disk / "out", ["--method", "sparsegpt"])) == 1
        err = capsys.readouterr().err
        assert _one_line(err, "no space left on the device of") and "Traceback" not in err, err
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        assert main(_prune_args(tiny, disk / "out", ["--method", "sparsegpt"])) == 0
        assert main(_prune_args(tiny, tmp_path / "clean", ["--method", "sparsegpt"])) == 0
        assert ((disk / "out" / "model.safetensors").read_bytes() ==
                (tmp_path / "clean" / "model.safetensors").read_bytes())


def test_an_fp16_overflow_names_the_layer_and_the_remedy(tiny, tmp_path, capsys):
    """Activations past float16's range make a Gram of inf: one line naming the layer and --dtype, exit 1."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "model"
    shutil.copytree(tiny[0], model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.model.layers[0].post_attention_layernorm.weight.mul_(1e3)
    model.save_pretrained(model_dir)
    assert main(_prune_args((model_dir, tiny[1]), tmp_path / "out", ["--dtype", "float16"])) == 1
    err = capsys.readouterr().err
    assert _one_line(err, "the Gram of its inputs holds NaN or Inf") and "optprune: failed: layer " in err, err
    assert "overflowed" in err and "(--dtype)" in err


def test_a_real_read_only_folder_is_refused_in_one_line_before_loading(tiny, tmp_path, capsys):
    """A tmpfs remounted read-only as --out (root ignores permission bits, not a read-only mount)."""
    with small_tmpfs(tmp_path / "ro") as disk:
        (disk / "out").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for out in (disk / "out", disk / "new"):
            assert main(_prune_args(tiny, out)) == 2
            err = capsys.readouterr().err
            assert _one_line(err, "is not a writable folder") and "Loading weights" not in err, err


def test_a_failed_write_with_space_left_names_the_file(tmp_path):
    from optprune.engine.state import atomic_write

    def broken(_path):
        raise RuntimeError("basic_ios::clear: iostream error")
    with pytest.raises(OSError, match=r"could not write .*x\.pt: basic_ios::clear: iostream error"):
        atomic_write(tmp_path / "x.pt", broken)
    assert list(tmp_path.iterdir()) == []


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
    import optprune.commands.prune as run

    def broken(*a, **k):
        raise RuntimeError("evaluation blew up")

    monkeypatch.setattr(run, "wikitext2_perplexity", broken)
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out, ["--eval-ppl"])) == 1
    err = capsys.readouterr().err
    assert "evaluation blew up" in err and "the pruned model is saved" in err
    assert (out / "model.safetensors").exists() and (out / "optprune_complete.json").exists()
    assert not (out / ".resume").exists()


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


@pytest.mark.parametrize("exact", ["milp", "oa", "refit-oa", "bnb-qcr"])
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


def test_a_second_run_on_a_locked_out_is_refused_at_once_and_the_lock_goes_with_the_run(tiny, tmp_path, capsys):
    from optprune.checkpoints import OutputFolder

    out = tmp_path / "out"
    with OutputFolder(out, str(tiny[0])).locked():       # another run holds the folder
        assert main(_prune_args(tiny, out)) == 2
        err = capsys.readouterr().err
        assert _one_line(err, f"--out {out} is in use by another optprune run (pid") and "Loading" not in err
    assert main(_prune_args(tiny, out)) == 0              # released: the same command runs
    assert main(_prune_args(tiny, out)) == 0 and "nothing to do" in capsys.readouterr().out


def test_a_finished_output_rerun_with_eval_ppl_is_evaluated_once(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_prune_args(tiny, out)) == 0
    assert "wikitext2" not in json.loads((out / "optprune_report.json").read_text())
    assert main(_prune_args(tiny, out, ["--eval-ppl"])) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "optprune_report.json").read_text())
    assert f"wikitext2 ppl {report['wikitext2']['ppl']:.3f}" in printed and "nothing to do" not in printed
    assert "perplexity" in (out / "README.md").read_text()
    assert main(_prune_args(tiny, out, ["--eval-ppl"])) == 0 and "nothing to do" in capsys.readouterr().out


def test_eval_on_an_unfinished_out_says_so_before_loading(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    (out / ".resume").mkdir(parents=True)
    assert main(["eval", "--model", str(out), "--data-dir", str(tiny[1])]) == 2
    assert _one_line(capsys.readouterr().err, "holds an unfinished optprune run (no saved model yet)")
    (out / ".resume").rmdir()
    assert main(["eval", "--model", str(out), "--data-dir", str(tiny[1])]) == 2
    assert _one_line(capsys.readouterr().err, "no config.json in this folder")
