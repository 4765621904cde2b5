"""validation/certify_model_table.py's dry run on the tiny model: optprune's checkpoints and a plain script's
certified over the whole model, one row each, every gap at least 1."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table_script(tiny, tmp_path, *extra):
    return subprocess.run([sys.executable, "validation/certify_model_table.py", "--dry-run", "--model", str(tiny[0]),
                           "--methods", "wanda", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "t.md"),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_the_whole_model_certificate_table_dry_run(tiny, tmp_path):
    run = table_script(tiny, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["name"] for r in rows] == ["optprune wanda", "plain Wanda-style script"]
    assert all(r["overall"]["gap"] >= 1 and r["layers"] == 14 for r in rows)
    assert all(r["error_own_weights"] > 0 for r in rows)
    written = (tmp_path / "t.md").read_text()
    assert "| plain Wanda-style script |" in written
    (tmp_path / "t.md").unlink()
    again = table_script(tiny, tmp_path, "--tabulate")       # from the run's files alone: the same table
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "t.md").read_text() == written
