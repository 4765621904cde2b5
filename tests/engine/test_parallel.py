"""Sharding layer problems over 2 gloo ranks gives the same pruned model as 1 process."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from optprune.parallel import solve_sharded, world


def _prune(net, windows, method, pattern, folder, row_shards=1):
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig

    config = PruneConfig(method=method, pattern=pattern, sparsity=0.5, dtype="float32", device="cpu",
                         row_shards=row_shards)
    return run_pruning(net, windows, config, adapter_for(net), folder)


def _run(rank, size, init_file, model_dir, data_dir, out_file, method, pattern_spec, row_shards=1):
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    torch.set_num_threads(1)
    if size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    net, tok, _ = load_model(model_dir, dtype=torch.float32)
    windows = calibration_windows(tok, "c4", 4, 32, 0, data_dir)
    report = _prune(net, windows, method, pattern_spec, f"{out_file}.work{rank}", row_shards)
    if rank == 0:
        torch.save({"state": net.state_dict(), "report": report}, out_file)
    if size > 1:
        _leave(rank)


def _leave(rank):
    """Both ranks are done once past the barrier; exit at once.  Tearing the gloo group down raced
    with the other rank's teardown once in CI (SIGABRT, "terminate called without an active
    exception" in gloo's C++ threads after all results were written): skipping the teardown
    removes that race from a test about the results."""
    import os
    import sys

    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_gloo_ranks_match_one_process(tiny, tmp_path):
    """Each rank carries half the windows and the Grams are summed over ranks: the same masks, and
    weights equal up to the order of the float sums."""
    model_dir, data = tiny
    for method, spec, shards in [("sparseswaps", "per-row", 1), ("spap", "structured", 1), ("sparsegpt", "2:4", 3)]:
        one, two = tmp_path / f"{method}1.pt", tmp_path / f"{method}2.pt"
        _run(0, 1, "", str(model_dir), str(data), str(one), method, spec, shards)
        mp.spawn(_run, args=(2, str(tmp_path / f"{method}.init"), str(model_dir), str(data), str(two), method, spec,
                             shards), nprocs=2, join=True)
        a, b = torch.load(one), torch.load(two)
        assert a["state"].keys() == b["state"].keys()
        for k in a["state"]:
            assert torch.equal(a["state"][k] == 0, b["state"][k] == 0), (method, k)
            diff = (a["state"][k] - b["state"][k]).norm() / a["state"][k].norm()
            assert diff < 1e-3, (method, k, float(diff))     # refits amplify the rounding of G's sums
        assert [r["layer"] for r in a["report"]["layers"]] == [r["layer"] for r in b["report"]["layers"]]
        assert [r["rel_error"] for r in a["report"]["layers"]] == pytest.approx(
            [r["rel_error"] for r in b["report"]["layers"]], rel=1e-4)


def test_row_chunks_split_rows_only_for_row_separable_patterns():
    from optprune.patterns import Pattern
    from optprune.pruner import row_chunks

    assert row_chunks(10, 3, Pattern("per-row", 0.5)) == [range(0, 3), range(3, 6), range(6, 10)]
    assert row_chunks(2, 5, Pattern.parse("2:4")) == [range(0, 1), range(1, 2)]
    assert row_chunks(7, 1, Pattern("unstructured", 0.5)) == [range(0, 7)]
    for bad in (Pattern("unstructured", 0.5), Pattern("structured", 0.5)):
        with pytest.raises(ValueError, match="row-separable"):
            row_chunks(8, 2, bad)
    with pytest.raises(ValueError, match=">= 1"):
        row_chunks(8, 0, Pattern("per-row", 0.5))


def test_row_shards_solve_the_rows_as_independent_problems(tiny, tmp_path):
    from optprune.data import calibration_windows
    from optprune.checkpoints.model_io import load_model

    model_dir, data = tiny
    states = []
    for shards in (1, 4):
        net, tok, _ = load_model(str(model_dir), dtype=torch.float32)
        windows = calibration_windows(tok, "c4", 4, 32, 0, str(data))
        rep = _prune(net, windows, "wanda", "per-row", tmp_path / f"s{shards}", shards)
        assert {r["row_shards"] for r in rep["layers"]} == {shards}
        states.append(net.state_dict())
    for k in states[0]:                  # Wanda's per-row choice only reads its own row
        assert torch.equal(states[0][k], states[1][k]), k


def test_solve_sharded_without_a_process_group_runs_everything_locally():
    assert world() == (0, 1)
    jobs = [torch.full((2, 2), float(k)) for k in range(3)]
    out = solve_sharded(jobs, lambda j: (j * 2, j > 0, {"k": float(j[0, 0])}))
    assert [o[2]["k"] for o in out] == [0.0, 1.0, 2.0]
    assert torch.equal(out[2][0], torch.full((2, 2), 4.0))


def _row_certify_jobs():
    """One exact MILP job per row of a small random problem (magnitude mask as the base)."""
    from optprune import Pattern, random_problem, select_mask
    from optprune.exact import build_subblock

    prob = random_problem(5, 12, seed=9)
    pat = Pattern("per-row", 0.5)
    base = select_mask(prob.W.abs(), pat)
    return [(build_subblock(prob, pat, base, rows=[r]), "milp", 30.0, None) for r in range(5)]


def _certify_on_ranks(rank, size, init_file, out_file):
    from optprune.compare import certify_many

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    results = certify_many(_row_certify_jobs())
    if rank == 0:
        torch.save([(r.status, r.objective) for r in results], out_file)
    _leave(rank)


def test_certification_shards_over_distributed_ranks_with_the_same_answers(tmp_path):
    from optprune.compare import certify_many

    mp.spawn(_certify_on_ranks, args=(2, str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2, join=True)
    serial = certify_many(_row_certify_jobs())
    assert torch.load(tmp_path / "out.pt") == [(r.status, r.objective) for r in serial]


def test_certification_fans_out_over_processes_with_the_same_answers():
    import numpy as np

    from optprune import Pattern, random_problem, select_mask
    from optprune.compare import certify_many
    from optprune.exact import build_subblock

    prob = random_problem(6, 12, seed=9)
    pat = Pattern("per-row", 0.5)
    base = select_mask(prob.W.abs(), pat)
    jobs = [(build_subblock(prob, pat, base, rows=[r]), "milp", 30.0, None) for r in range(6)]
    serial, fanned = certify_many(jobs, 1), certify_many(jobs, 2)
    assert [r.status for r in fanned] == ["optimal"] * 6
    assert np.allclose([r.objective for r in serial], [r.objective for r in fanned], rtol=1e-12)
