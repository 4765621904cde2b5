"""validation/inference_speed.py's dry run on a tiny model (issue 37 item 3): the table's columns, the CSR path
measured beside the dense matmul, the same perplexity on both paths."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_inference_speed_dry_run_measures_every_path(tiny, tmp_path):
    run = subprocess.run([sys.executable, "validation/inference_speed.py", "--dry-run", "--model", str(tiny[0]),
                          "--work", str(tmp_path / "work"), "--out", str(tmp_path / "speed.md"), "--dtypes", "float32"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["model"], r["path"]) for r in rows] == [("dense", "dense matmul"), ("unstructured 50%", "dense matmul"),
                                                       ("unstructured 50%", "sparse CSR")]
    assert all(r["prefill_tok_s"] > 0 and r["decode_b8_tok_s"] > 0 and r["peak_rss_gib"] > 0 for r in rows)
    assert abs(rows[1]["ppl"] - rows[2]["ppl"]) < 1e-3 * rows[1]["ppl"]      # the CSR path computes the same model
    assert "| unstructured 50% | float32 | sparse CSR |" in (tmp_path / "speed.md").read_text()
