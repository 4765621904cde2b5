"""The DNN relaxation (Shor SDP + cardinality RLT products + nonnegative products) of the mask problem:
its statement holds every binary point, its ADMM bound is rigorous at any iteration count, equals the
relaxation's optimum (cvxpy) when converged, and is tighter than the QCR relaxation."""
import cvxpy as cp
import numpy as np
import pytest

from optprune import Pattern, random_problem, select_mask
from optprune.exact import brute_force, build_subblock
from optprune.exact.dnn import solve_dnn
from formulations import backends, mask
from formulations.dnn import dnn_relaxation, dual_bound, to_cvxpy

BLOCKS = [(1, 10, "per-row", 0.5), (2, 5, "unstructured", 0.5), (1, 12, "2:4", None), (3, 8, "structured", 0.4)]


@pytest.fixture(params=BLOCKS, ids=lambda b: f"{b[2]}-{b[0]}x{b[1]}")
def qp(request):
    rows, cols, spec, sp = request.param
    prob = random_problem(rows, cols, seed=5)
    pat = Pattern.parse(spec, default=sp)
    return build_subblock(prob, pat, select_mask(prob.W.abs(), pat)).qp


def test_every_binary_point_lifts_to_a_feasible_point_of_the_same_value(qp):
    rel = dnn_relaxation(qp)
    _, z = brute_force(qp)
    Y = rel.lift(z)
    assert np.abs(rel.residual(Y)).max() < 1e-12
    assert float((rel.C * Y).sum()) == pytest.approx(qp.value(z), rel=1e-12, abs=1e-12)
    assert rel.trace[0] <= np.trace(Y) <= rel.trace[1]
    wrong = z.copy()
    wrong[np.flatnonzero(z == 0)[0]] = 1                  # one unit too many pruned in its group
    assert np.abs(rel.residual(rel.lift(wrong))).max() > 0.5


@pytest.mark.parametrize("iters", [1, 5, 400])
def test_the_admm_bound_never_exceeds_the_brute_force_optimum(qp, iters):
    best, _ = brute_force(qp)
    s = qp.scale()
    out = solve_dnn(dnn_relaxation(qp.scaled(s)), iters=iters, check_every=1)
    assert out.bound * s <= best + 1e-9 * max(abs(best), 1.0)


def test_a_converged_bound_is_the_relaxation_optimum_and_beats_the_qcr_relaxation(qp):
    s = qp.scale()
    scaled = qp.scaled(s)
    rel = dnn_relaxation(scaled)
    prob, _ = to_cvxpy(rel)
    prob.solve(solver=cp.CLARABEL)
    out = solve_dnn(rel, iters=10000, check_every=50)
    assert out.bound <= prob.value + 1e-6
    assert out.bound == pytest.approx(prob.value, rel=2e-3, abs=2e-4)
    qcr = backends.solve_highs(mask.mask_relaxation(mask.convex_reformulation(scaled))).objective
    assert out.bound >= qcr - 1e-6
    assert prob.value > qcr + 1e-3 * abs(qcr)             # strictly tighter on these instances


def test_a_dual_point_gives_a_bound_whatever_it_is():
    """dual_bound is weak duality: random dual points (y, N) all stay below the optimum."""
    prob = random_problem(1, 8, seed=2)
    pat = Pattern.parse("per-row", 0.5)
    qp = build_subblock(prob, pat, select_mask(prob.W.abs(), pat)).qp
    best, _ = brute_force(qp)
    rel = dnn_relaxation(qp)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.normal(size=len(rel.b)) * qp.scale()
        N = np.abs(rng.normal(size=rel.C.shape)) * qp.scale()
        assert dual_bound(rel, y, N) <= best


def test_certify_reports_the_dnn_bound_on_its_rows_and_no_mask_beats_it(tmp_path, capsys):
    """`optprune certify --dnn-iters`: the bound on rows 0 and 1 never exceeds their brute-force optimum, so
    every method's gap to it is at least 1; the markdown says what was bounded."""
    import json
    from itertools import combinations

    import torch
    from safetensors.torch import save_file

    from optprune.commands import main

    prob = random_problem(4, 10, seed=3, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    assert main(["certify", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps",
                 "--rows", "0,1", "--window", "8", "--dnn-iters", "300", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())[0]
    W, G = prob.float64()
    optimum = sum(min(float((W[i] * z) @ G @ (W[i] * z)) for z in
                      (np.isin(np.arange(10), c).astype(float) for c in combinations(range(10), 5))) for i in (0, 1))
    energy = float(np.trace(W @ G @ W.T))
    assert 0 < report["dnn_bound"] <= optimum / energy * (1 + 1e-9) and report["dnn_iterations"] == 300
    assert all(row["gap_dnn"] >= 1 - 1e-9 for row in report["methods"])
    assert "DNN relaxation bound (mask only) on rows [0, 1]" in capsys.readouterr().out


@pytest.mark.parametrize("iters", [1, 300])
def test_the_row_certificate_takes_each_rows_larger_bound_and_never_exceeds_the_optimum(iters):
    """With the full-row bounds, each certified row's certificate is the larger of its QCR and DNN bounds: at
    least the DNN bound (strictly more after 1 ADMM step, where QCR wins), never above the rows' brute-force
    optimum, so no mask's gap to it is below 1."""
    from itertools import combinations

    from optprune.compare import compare
    from optprune.solvers import prune_layer

    prob, pat, rows = random_problem(4, 10, seed=3), Pattern.parse("per-row", 0.5), [0, 2]
    results = {m: prune_layer(prob, pat, m) for m in ("wanda", "sparseswaps")}
    cmp = compare(prob, pat, results, rows=rows, window_size=4, full_row_bounds=True, dnn_iters=iters)
    W, G = prob.float64()
    optimum = sum(min(float((W[i] * z) @ G @ (W[i] * z)) for z in
                      (np.isin(np.arange(10), c).astype(float) for c in combinations(range(10), 5))) for i in rows)
    optimum /= float(np.trace(W @ G @ W.T))
    assert cmp.dnn_bound <= cmp.row_certificate <= optimum * (1 + 1e-9)
    if iters == 1:
        assert cmp.row_certificate > cmp.dnn_bound * 1.01
    assert all(r.gap_certificate >= 1 - 1e-9 for r in cmp.methods)
    assert "each row's larger bound of QCR and DNN" in cmp.to_markdown()


def test_the_dnn_bound_asked_for_a_pattern_it_cannot_bound_says_so():
    from optprune.compare import compare
    from optprune.solvers import prune_layer

    prob, pat = random_problem(4, 8, seed=0), Pattern("unstructured", 0.5)
    cmp = compare(prob, pat, {"wanda": prune_layer(prob, pat, "wanda")}, window_size=4, dnn_iters=10)
    assert cmp.dnn_bound != cmp.dnn_bound and "rows are independent" in cmp.dnn_note
    assert "DNN bound not computed" in cmp.to_markdown()
    with pytest.raises(ValueError, match="dnn_iters"):
        compare(prob, pat, {"wanda": prune_layer(prob, pat, "wanda")}, window_size=4, dnn_iters=-1)


def test_a_wide_nm_row_is_refused_with_its_size_not_stated():
    """2:4 on 400 inputs would state 100 groups x 400 products (over MAX_PRODUCT_ROWS): refused before any
    work, and the comparator says why."""
    from optprune.compare import compare
    from optprune.exact.dnn import MAX_PRODUCT_ROWS, row_binary_qp
    from optprune.solvers import prune_layer

    prob, pat = random_problem(2, 400, seed=0), Pattern.parse("2:4")
    assert 100 * 400 > MAX_PRODUCT_ROWS
    with pytest.raises(ValueError, match="would state 40000 cardinality products"):
        row_binary_qp(prob, pat, 0)
    cmp = compare(prob, pat, {"wanda": prune_layer(prob, pat, "wanda")}, window_size=8, dnn_iters=10)
    assert "cardinality products" in cmp.dnn_note and cmp.dnn_bound != cmp.dnn_bound
    assert "DNN bound not computed" in cmp.to_markdown()
