"""validation/reconstruct_qkv.py's page from four output folders' reports: the figures it reads, the
perplexity against the every-epoch row, the sentence on block errors derived from the rows, and the refusal of
folders given in the wrong order or without a report."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_run(folder: Path, qkv, ppl: float, fit_seconds: float, after: float = 0.015) -> Path:
    """An output folder whose report has what the page reads (two blocks; `after`: block 0's held-out error)."""
    folder.mkdir()
    block = dict(seconds=fit_seconds, error_before=dict(held_out=0.02), error_after=dict(held_out=after))
    objective = {} if qkv is None else dict(reconstruct_qkv_epochs=qkv)
    report = dict(command="optprune prune ...", machine="test host", settings=dict(objective=objective),
                  reconstruction={"0": block, "1": dict(block, error_after=dict(held_out=0.017))},
                  prune_seconds=100.0 + fit_seconds, allocation=dict(seconds=40.0), wikitext2=dict(ppl=ppl))
    (folder / "optprune_report.json").write_text(json.dumps(report))
    return folder


def page_script(tmp_path, *folders):
    return subprocess.run([sys.executable, "validation/reconstruct_qkv.py", "--reports", *map(str, folders),
                           "--out", str(tmp_path / "page"), "--remark", "a remark"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_page_reads_each_report_and_compares_with_every_epoch(tmp_path):
    every = fake_run(tmp_path / "every", None, 30.0, 10.0)     # a report from before the setting: every epoch
    two = fake_run(tmp_path / "two", 2, 30.3, 9.0, after=0.019)
    first = fake_run(tmp_path / "first", 1, 31.5, 8.0)
    none = fake_run(tmp_path / "none", 0, 33.0, 6.0)
    run = page_script(tmp_path, every, two, first, none)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((tmp_path / "page.json").read_text())
    assert [r["qkv_epochs"] for r in rows] == [-1, 2, 1, 0]
    assert [r["reconstruction_seconds"] for r in rows] == [20.0, 18.0, 16.0, 12.0]
    assert rows[0]["held_out_after"] == 0.016
    page = (tmp_path / "page.md").read_text()
    assert "| the first epoch (1 of 3) | 16 | 108 | 40 | 31.500 | +5.0% | 0.02000 -> 0.01600 |" in page
    assert "| no epoch (0 of 3) | 12 | 106 | 40 | 33.000 | +10.0% |" in page
    assert "| the first two epochs (2 of 3) | 18 | 109 | 40 | 30.300 | +1.0% | 0.02000 -> 0.01800 |" in page
    assert "frozen in 2 of 3 variants the mean held-out block error after the fit is no higher" in page
    assert page.rstrip().endswith("a remark")


def test_folders_in_the_wrong_order_are_refused(tmp_path):
    folders = [fake_run(tmp_path / n, q, 30.0, 5.0) for n, q in (("a", 1), ("b", -1), ("c", 2), ("d", 0))]
    run = page_script(tmp_path, *folders)
    assert run.returncode != 0
    assert "not [-1, 2, 1, 0] in that order" in run.stderr
    assert not (tmp_path / "page.md").exists()


def test_a_folder_without_a_report_gets_one_line(tmp_path):
    folders = [fake_run(tmp_path / n, q, 30.0, 5.0) for n, q in (("a", None), ("b", 2), ("c", 1))]
    (tmp_path / "empty").mkdir()
    run = page_script(tmp_path, *folders, tmp_path / "empty")
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [f"reconstruct_qkv: {tmp_path / 'empty'} holds no "
                                               "optprune_report.json (not an `optprune prune` output folder)"]
    assert not (tmp_path / "page.md").exists()
