"""validation/pipeline_ppl.py's side-by-side page for a model other than SmolLM2 (the Gemma-3 table): each
setting's lowest-perplexity row against the SparseGPT row of the same run, seconds with the pricing pass."""
import json


def _row(ppl, prune, pricing=None, cached=False):
    row = dict(ppl=ppl, prune_seconds=prune, machine="m", nsamples=128, seqlen=2048)
    if pricing is not None:
        row["allocation"] = dict(seconds=pricing, pricing_cached=cached)
    return row


def test_each_setting_s_best_row_is_set_against_sparsegpt_of_the_same_run(tmp_path):
    import pipeline_ppl                                   # validation/ is on the path (conftest)

    per_row = {"dense": dict(ppl=17.0, prune_seconds=None, machine="m", nsamples=128, seqlen=2048),
               "wanda": _row(40.0, 900), "sparsegpt": _row(30.0, 1000), "best": _row(25.0, 2500, pricing=500)}
    two_four = {"sparsegpt": _row(60.0, 1000), "best": _row(45.0, 2000, pricing=400, cached=True)}
    (tmp_path / "gemma3_ppl_per-row-0.50.json").write_text(json.dumps(per_row))
    (tmp_path / "gemma3_ppl_2of4-0.50.json").write_text(json.dumps(two_four))
    (tmp_path / "gemma3_zeroshot.md").write_text("# zero-shot\n")
    pipeline_ppl.write_summary(tmp_path, "gemma3_ppl", "gemma-3-270m")
    page = (tmp_path / "gemma3_ppl_summary.md").read_text()
    assert page.startswith("# gemma-3-270m: every method and setting side by side")
    assert "| per-row 50% | best | 25.00 | 30.00 | -16.7% | 3000 | 3.00 |" in page      # pricing pass counted
    assert "| 2:4 50% | best | 45.00 | 60.00 | -25.0% | 2000 | 2.00 |" in page          # a cached one is not
    assert "| dense | 17.00 | not run |" in page and "[gemma3_zeroshot.md](gemma3_zeroshot.md)" in page
    assert not (tmp_path / "smollm2_ppl_summary.md").exists()
