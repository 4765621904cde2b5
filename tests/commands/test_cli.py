"""The command line on a tiny random Llama (no hub, no ../shared): prune, certify, report."""
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from optprune.commands import main


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("method,pattern", [("wanda", "per-row"), ("sparseswaps", "2:4"), ("sparsegpt", "unstructured")])
def test_prune_writes_a_sparse_checkpoint_and_leaves_the_input(tiny, cli_prune, tmp_path, method, pattern):
    from transformers import AutoModelForCausalLM

    model_dir, _ = tiny
    before = _digest(model_dir)
    assert cli_prune(tmp_path / "out", method, pattern, ["--eval-ppl"]) == 0
    assert _digest(model_dir) == before
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert len(report["layers"]) == 14 and math.isfinite(report["wikitext2"]["ppl"])
    assert report["adapter"] == "llama" and report["wikitext2"]["bos"] is False
    assert set(report["breakdown"]["1"]) == {"forward", "grams", "solve", "propagate", "io"}
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, p in pruned.named_parameters():
        if name.endswith("proj.weight"):
            assert float((p == 0).float().mean()) == pytest.approx(0.5, abs=0.02), name
    assert not (tmp_path / "out" / ".resume").exists()


def test_method_args_reach_the_method_and_are_checked_against_its_signature(cli_prune, tmp_path, capsys):
    assert cli_prune(tmp_path / "a", "sparseswaps", "per-row", ["--method-arg", "max_iter=0"]) == 0
    zero = json.loads((tmp_path / "a" / "optprune_report.json").read_text())
    assert zero["method_options"] == {"max_iter": 0}
    assert cli_prune(tmp_path / "b", "wanda", "per-row") == 0
    wanda = json.loads((tmp_path / "b" / "optprune_report.json").read_text())
    # no swap allowed: sparseswaps keeps its Wanda warm start
    assert [r["rel_error"] for r in zero["layers"]] == pytest.approx([r["rel_error"] for r in wanda["layers"]])
    for bad, message in ((["--method-arg", "iters=3"], "sparseswaps has no option iters"),
                         (["--method-arg", "max_iter=many"], "expected int"),
                         (["--method-arg", "max_iter"], "write key=value")):
        assert cli_prune(tmp_path / "c", "sparseswaps", "per-row", bad) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()          # refused before anything was loaded or written


def test_refuses_to_overwrite_the_input_model(tiny, cli_prune, capsys):
    model_dir, _ = tiny
    before = _digest(model_dir)
    assert cli_prune(model_dir) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert _digest(model_dir) == before


def test_an_encoder_is_refused_with_one_line(tiny, tmp_path, capsys):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path)
    assert main(["eval", "--model", str(tmp_path), "--data-dir", str(tiny[1])]) == 2
    assert "is an encoder" in capsys.readouterr().err


def test_magnitude_needs_no_calibration_and_matches_the_layer_solver(tiny, cli_prune, tmp_path):
    from transformers import AutoModelForCausalLM

    from optprune.patterns import Pattern
    from optprune.problem import LayerProblem
    from optprune.solvers import prune_layer

    model_dir, _ = tiny
    dense = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    # no calibration data exists at --data-dir: the data-free path must not read any
    assert cli_prune(tmp_path / "out", "magnitude", "2:4", data_dir=tmp_path / "no-data") == 0
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    assert report["mean_rel_error"] is None and len(report["layers"]) == 14
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, W in dense.items():
        if name.endswith("proj.weight"):
            problem = LayerProblem(W, torch.eye(W.shape[1]), name)
            expected = prune_layer(problem, Pattern.parse("2:4", 0.5), "magnitude").weight
            assert torch.equal(pruned[name], expected), name
        else:
            assert torch.equal(pruned[name], W), name
    # with --layer-errors the calibrated path runs: same weights, errors measured
    assert cli_prune(tmp_path / "calibrated", "magnitude", "2:4", ["--layer-errors"]) == 0
    calibrated = json.loads((tmp_path / "calibrated" / "optprune_report.json").read_text())
    assert all(r["rel_error"] > 0 for r in calibrated["layers"])
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "calibrated").state_dict()
    assert all(torch.equal(again[k], v) for k, v in pruned.items())


def test_certify_cli_reports_gaps(tmp_path, capsys):
    from safetensors.torch import save_file

    from optprune import random_problem

    prob = random_problem(4, 16, seed=3, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    rc = main(["certify", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps",
               "--rows", "0,1", "--window", "8", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())[0]
    for row in report["methods"]:
        assert row["block_status"] == "optimal"
        assert row["block_value"] >= row["block_optimum"] - 1e-9 * abs(row["block_optimum"])
        assert row["rel_error_mask"] >= report["relaxation_bound"] - 1e-12
    assert "| sparseswaps |" in capsys.readouterr().out
    assert main(["certify", "--layer", str(tmp_path / "missing.safetensors")]) == 2


def test_report_writes_markdown_and_real_pngs(tmp_path):
    from safetensors.torch import save_file

    from optprune import random_problem

    prob = random_problem(6, 16, seed=4, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    assert main(["report", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps,maiht",
                 "--window", "8", "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    for fig in ("objective", "gaps", "overlap", "rows"):
        assert f"({fig}.png)" in text
        assert (tmp_path / "rep" / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sparseswaps |" in text and "optimal" in text


def test_mask_agreement_is_one_on_the_diagonal_and_symmetric():
    from optprune.report import mask_agreement

    a, b = torch.rand(4, 8) > 0.5, torch.rand(4, 8) > 0.5
    agree = mask_agreement({"a": a, "b": b, "not_a": ~a})
    assert (agree.diagonal() == 1).all() and (agree == agree.T).all()
    assert agree[0, 2] == 0.0


@pytest.mark.parametrize("extra", [[], ["--method", "sparsegpt", "--target", "dense"]], ids=["dense-model", "dense-target"])
def test_dump_layers_writes_problems_that_certify_reads(tiny, tmp_path, capsys, extra):
    from optprune.problem import load_layer_problems

    model_dir, data = tiny
    out = tmp_path / "layers.safetensors"
    assert main(["dump-layers", "--model", str(model_dir), "--blocks", "1", "--out", str(out), "--nsamples", "4",
                 "--seqlen", "32", "--data-dir", str(data), "--device", "cpu", "--dtype", "float32", *extra]) == 0
    problems = load_layer_problems(out)
    assert sorted(problems) == sorted(f"1.{n}" for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                          "mlp.down_proj"))
    assert all(p.dense_target == bool(extra) for p in problems.values())
    capsys.readouterr()
    assert main(["certify", "--layer", str(out), "--name", "1.self_attn.q_proj", "--method", "wanda,sparsegpt",
                 "--window", "8", "--time-limit", "30"]) == 0
    assert "sparsegpt" in capsys.readouterr().out


def test_dump_layers_refuses_bad_blocks_before_loading(tiny, tmp_path, capsys):
    model_dir, data = tiny
    args = ["dump-layers", "--model", str(model_dir), "--out", str(tmp_path / "x.safetensors"), "--data-dir", str(data),
            "--nsamples", "4", "--seqlen", "32", "--device", "cpu"]
    assert main(args + ["--blocks", "a,b"]) == 2
    assert "give block indices" in capsys.readouterr().err
    assert main(args + ["--blocks", "0", "--target", "dense"]) == 2
    assert main(args + ["--blocks", "7"]) == 2
    err = capsys.readouterr().err
    assert "blocks must lie in [0, 2)" in err and "Loading weights" not in err


def test_a_progress_bar_hands_over_to_the_next_pass_after_its_last_block():
    import io

    from optprune.progress import BlockProgress

    out = io.StringIO()
    prune = BlockProgress("prune", 3, stream=out)
    prune.start -= 100.0                                   # as if the pricing pass had taken 100 s
    pricing = BlockProgress("price", 2, stream=out, then=prune.restart)
    pricing.update()
    assert prune.start < pricing.start
    pricing.update()
    assert prune.start >= pricing.last                     # the prune clock starts when pricing ends
    assert out.getvalue().splitlines()[-1].startswith("price: block 2/2") and "done" in out.getvalue()


def test_a_resumed_run_counts_blocks_from_its_first_unsaved_block():
    import io

    from optprune.progress import BlockProgress

    out = io.StringIO()
    bar = BlockProgress("prune", 30, stream=out)
    bar.start -= 10.0                                      # 10 s for block 2, the first this process runs
    bar.update(2, 10.0)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("prune: block 3/30") and "about 4 min 30 s left" in line   # 27 blocks x 10 s
    bar.note("epoch 1/2")
    assert out.getvalue().splitlines()[-1] == "prune: block 4/30: epoch 1/2"


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_prune_says_in_one_line_that_rerunning_resumes(cli_prune, tmp_path, capsys, monkeypatch, how):
    import os
    import signal

    import optprune.commands.prune as prune

    def stop(*args, **kwargs):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(prune, "run_pruning", stop)
    assert cli_prune(tmp_path / "out") == 130
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("optprune")]
    assert lines == ["optprune: interrupted: what was finished is kept in --out; rerun the same command to resume "
                     "(bit-identically)"]
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.undo()
    assert cli_prune(tmp_path / "out") == 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_certify_inside_a_long_highs_solve_in_one_line(tmp_path, sig):
    """HiGHS's root LP checks for interrupts seconds apart: the signal still ends `certify` within seconds of
    its arrival (not at the 60 s time limit), with one line and exit 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    X = torch.randn(128, 512) * torch.exp(torch.randn(128, 1))
    save_file({"l.weight": torch.randn(8, 128), "l.gram": X @ X.T}, str(tmp_path / "layer.safetensors"))
    proc = subprocess.Popen([sys.executable, "-m", "optprune", "certify", "--layer", str(tmp_path / "layer.safetensors"),
                             "--method", "wanda", "--rows", "0,1,2,3,4,5,6,7", "--window", "128", "--time-limit", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (SIGINT's default restored in the child: a shell's background job, CI's included, starts with SIGINT
    # ignored, which a child inherits, and Python then leaves Ctrl-C ignored, as a nohup'd run asks)
    time.sleep(8)                                           # imports, the method, and into the exact solve
    assert proc.poll() is None, proc.communicate()
    sent = time.perf_counter()
    os.kill(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=30)
    assert time.perf_counter() - sent < 10
    lines = [line for line in err.splitlines() if line.startswith("optprune")]
    assert proc.returncode == 130 and lines == ["optprune: interrupted: nothing was written"], err
