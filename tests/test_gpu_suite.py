"""The GPU suite's CPU dry run (issue 42): every step of validation/gpu_suite.sh on tiny models, so that the
script a lent GPU runs first keeps working between the sessions that have one."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_suite_dry_run_runs_every_step_and_writes_its_tables(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(ROOT))
    run = subprocess.run(["bash", "validation/gpu_suite.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "dry run: every step ran" in run.stdout
    assert "| tiny | 2 |" in run.stdout                                     # the rehearsal's row
    assert "| wanda |" in run.stdout and "| sparsegpt+recon+milpsens |" in run.stdout   # the SmolLM2 table's
    assert "| attention 4096x4096 |" in run.stdout                          # the solver timings'


def test_the_gpu_suite_names_its_stages():
    run = subprocess.run(["bash", "validation/gpu_suite.sh", "nonsense"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, OUT="/tmp/optprune_gpu_suite_usage"))
    assert run.returncode == 2 and "prepare | model-free | smollm2 | --dry-run" in run.stdout
