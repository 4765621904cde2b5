"""Kill -9 during a prune, at a block boundary and inside the final save: the rerun finishes
bit-identical to an uninterrupted run, and the report's times add up across the processes."""
import json
import subprocess
import sys

import pytest

KILLER = r"""
import os, signal, sys
where, args = sys.argv[1], sys.argv[2:]
import optprune.engine.state as state
import optprune.checkpoints.output as output

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if where == "after block 0":
    save = state.ResumeState.save
    def killing_save(self, b, block, report):
        save(self, b, block, report)
        if b == 0:
            die()
    state.ResumeState.save = killing_save
else:                      # inside the final save, after the first file was renamed into --out
    class KillingOs:
        def __getattr__(self, name):
            return getattr(os, name)
        def replace(self, src, dst):
            os.replace(src, dst)
            die()
    output.os = KillingOs()
from optprune.commands import main
sys.exit(main(args))
"""


def _prune(tiny, out, where=None, method="sparsegpt"):
    model_dir, data = tiny
    args = ["prune", "--model", str(model_dir), "--method", method, "--pattern", "per-row", "--nsamples", "4",
            "--seqlen", "32", "--data-dir", str(data), "--out", str(out), "--device", "cpu", "--dtype", "float32"]
    cmd = [sys.executable, "-c", KILLER, where, *args] if where else [sys.executable, "-m", "optprune", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    assert _prune(tiny, out).returncode == 0
    return (out / "model.safetensors").read_bytes()


@pytest.mark.parametrize("where", ["after block 0", "inside the final save"])
def test_a_killed_run_resumes_bit_identical(tiny, tmp_path, uninterrupted, where):
    out = tmp_path / "out"
    killed = _prune(tiny, out, where)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "optprune_complete.json").exists()          # never mistaken for a finished output
    assert (out / ".resume" / "fingerprint.json").exists()
    rerun = _prune(tiny, out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == uninterrupted
    report = json.loads((out / "optprune_report.json").read_text())
    assert len(report["sessions"]) == 2 and all(s > 0 for s in report["sessions"])
    assert report["prune_seconds"] >= sum(report["sessions"])
    assert sorted({r["block"] for r in report["layers"]}) == [0, 1] and len(report["layers"]) == 14
    assert not (out / ".resume").exists() and not (out / ".staging").exists()


def test_a_data_free_run_killed_in_its_final_save_is_redone(tiny, tmp_path):
    """magnitude keeps no resume state: the cut-short save (.staging) marks the folder as optprune's."""
    whole, out = tmp_path / "whole", tmp_path / "out"
    assert _prune(tiny, whole, method="magnitude").returncode == 0
    assert _prune(tiny, out, "inside the final save", method="magnitude").returncode == -9
    assert not (out / "optprune_complete.json").exists() and (out / ".staging").is_dir()
    rerun = _prune(tiny, out, method="magnitude")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
