"""Full-row bounds (QCR for mask only, perspective for mask + refit): never above the brute-force optimum,
tight where theory says so, and tighter than the box bound where the shared diagonal has room."""
import numpy as np
import pytest
import torch

from optprune import LayerProblem, Pattern, random_problem
from optprune.exact.brute import all_masks, layer_optimum
from optprune.exact.row_bounds import (keep_update, perspective_bound, project_keep, qcr_bound,
                                       shared_diagonal)

CASES = [(2, 8, "per-row", 0.5), (2, 8, "2:4", None), (2, 6, "unstructured", 0.5), (1, 10, "per-row", 0.3)]


def brute_force(prob, pattern, refit):
    return layer_optimum(prob, pattern, refit)


def lam_of(prob):
    W, G = prob.float64()
    return shared_diagonal(G, (W ** 2).mean(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows,cols,spec,sparsity", CASES)
def test_qcr_and_box_bounds_never_exceed_the_optimum(seed, rows, cols, spec, sparsity):
    prob = random_problem(rows, cols, seed=seed).to(torch.float64)
    pat = Pattern.parse(spec, default=sparsity)
    best = brute_force(prob, pat, refit=False)
    lam = lam_of(prob)
    W, G = prob.float64()
    assert np.all(lam >= 0) and np.linalg.eigvalsh(G - np.diag(lam))[0] >= 0
    for bound in (qcr_bound(prob, pat, None, iters=200), qcr_bound(prob, pat, lam, iters=200)):
        assert 0 <= bound.value <= best * (1 + 1e-9) + 1e-12
        if bound.per_row is not None:
            assert bound.per_row.sum() == pytest.approx(bound.value)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows,cols,spec,sparsity", [c for c in CASES if c[2] != "unstructured"])
def test_perspective_bound_never_exceeds_the_refit_optimum(seed, rows, cols, spec, sparsity):
    prob = random_problem(rows, cols, seed=seed).to(torch.float64)
    pat = Pattern.parse(spec, default=sparsity)
    best = brute_force(prob, pat, refit=True)
    bound = perspective_bound(prob, pat, lam_of(prob), iters=40)
    assert 0 <= bound.value <= best * (1 + 1e-9) + 1e-12


def diagonal_problem(seed=0, rows=3, cols=8):
    """G diagonal: the mask problem is separable, so the shared diagonal is diag(G) and both bounds are
    exact, while the box relaxation (w_j^2 G_jj z_j^2) is not."""
    g = torch.rand(cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return LayerProblem(W, torch.diag(g))


def test_on_a_diagonal_gram_both_bounds_are_exact_and_the_box_is_not():
    prob, pat = diagonal_problem(), Pattern("per-row", 0.5)
    lam = lam_of(prob)
    assert lam == pytest.approx(np.diag(prob.float64()[1]), rel=1e-3)
    mask_opt = brute_force(prob, pat, refit=False)
    qcr, box = qcr_bound(prob, pat, lam, iters=300).value, qcr_bound(prob, pat, None, iters=300).value
    assert qcr == pytest.approx(mask_opt, rel=2e-3) and qcr <= mask_opt * (1 + 1e-9)
    assert box < 0.8 * mask_opt
    refit_opt = brute_force(prob, pat, refit=True)
    persp = perspective_bound(prob, pat, lam, iters=40).value
    assert persp == pytest.approx(refit_opt, rel=2e-3) and persp <= refit_opt * (1 + 1e-9)


def test_qcr_is_tighter_than_the_box_on_a_correlated_gram():
    prob, pat = random_problem(4, 16, seed=3).to(torch.float64), Pattern("per-row", 0.5)
    lam = lam_of(prob)
    assert qcr_bound(prob, pat, lam, iters=300).value > 1.05 * qcr_bound(prob, pat, None, iters=300).value


@pytest.mark.parametrize("spec,sparsity,cols", [("per-row", 0.5, 8), ("2:4", None, 8), ("unstructured", 0.5, 6)])
def test_projection_and_keep_update_stay_in_the_relaxed_set(spec, sparsity, cols):
    pat = Pattern.parse(spec, default=sparsity)
    Y = torch.randn(2, cols, dtype=torch.float64) * 2
    M = project_keep(Y, pat)
    units = pat.to_units(M)[..., 0]
    budget = units.shape[-1] - pat.pruned_per_group(2, cols)
    assert bool((M >= 0).all() and (M <= 1).all()) and bool((units.sum(-1) <= budget + 1e-9).all())
    # the projection is the closest point: no vertex of the set is closer to Y
    for m in all_masks(pat, 2, cols):
        assert (Y - M).norm() <= (Y - m.double()).norm() + 1e-9
    K = pat.to_units(keep_update(torch.rand(2, cols, dtype=torch.float64), pat))[..., 0]
    assert bool((K > 0).all() and (K <= 1).all()) and K.sum(-1) == pytest.approx(torch.full_like(K[:, 0], budget))


def test_bounds_refuse_what_they_cannot_bound():
    prob = random_problem(2, 8, seed=0).to(torch.float64)
    with pytest.raises(ValueError, match="entrywise"):
        qcr_bound(prob, Pattern("structured", 0.5), None)
    with pytest.raises(ValueError, match="rows are independent"):
        perspective_bound(prob, Pattern("unstructured", 0.5), lam_of(prob))
    singular = LayerProblem(prob.W, torch.zeros(8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive definite"):
        shared_diagonal(singular.float64()[1])


def test_certify_and_report_show_the_full_row_bounds(tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from optprune.commands import main

    prob = random_problem(6, 16, seed=3, dtype=torch.float32)
    save_file({"lin.weight": prob.W, "lin.gram": prob.G}, str(tmp_path / "layer.safetensors"))
    assert main(["certify", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparseswaps",
                 "--rows", "0,1", "--window", "8", "--full-row-bounds", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())[0]
    assert report["qcr_bound"] > 0 and report["perspective_bound"] > 0 and report["perspective_rows"] == [0, 1]
    for row in report["methods"]:      # no mask beats a certified bound; every row is counted once
        assert row["gap_qcr"] >= 1 - 1e-9 and row["gap_perspective"] >= 1 - 1e-9
        assert sum(row["row_gap_histogram"].values()) == 6
    assert "Full-row bounds" in capsys.readouterr().out
    assert main(["report", "--layer", str(tmp_path / "layer.safetensors"), "--method", "wanda,sparsegpt",
                 "--window", "8", "--full-row-bounds", "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "row_gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(row_gaps.png)" in (tmp_path / "rep" / "report.md").read_text()


def test_the_bounds_reach_the_optima_of_their_stated_relaxations():
    """QCR: the sub-block statement mask_relaxation(convex_reformulation(qp, w^2 lam)) of each whole row,
    solved by HiGHS; perspective: the cvxpy statement, solved by Clarabel.  The layer-scale solvers' bounds
    are below those optima (they are certificates of them) and within 1% of them."""
    import cvxpy as cp

    from optprune.exact import build_subblock
    from formulations import backends
    from formulations.mask import convex_reformulation, mask_relaxation
    from formulations.refit import perspective_relaxation

    prob, pat = random_problem(2, 10, seed=5), Pattern("per-row", 0.5)
    lam = lam_of(prob)
    W, G = prob.float64()
    B, kappa = prob.linear64()
    qcr = qcr_bound(prob, pat, lam, iters=1000).per_row
    persp = perspective_bound(prob, pat, lam, iters=200).per_row
    for i in range(2):
        block = build_subblock(prob, pat, pat.project(prob.W.abs()), rows=[i], window=np.arange(10))
        stated = backends.solve_highs(mask_relaxation(convex_reformulation(block.qp, W[i] ** 2 * lam)), 60.0)
        assert stated.status == "optimal"
        assert stated.objective * (1 - 1e-2) <= qcr[i] <= stated.objective * (1 + 1e-7)
        problem = perspective_relaxation(B[i], kappa[i], G, lam, keep=5)
        problem.solve(solver=cp.CLARABEL)
        assert problem.value * (1 - 1e-2) <= persp[i] <= problem.value * (1 + 1e-6)


def test_full_row_bounds_asked_for_a_pattern_they_cannot_bound_say_so():
    from optprune.compare import compare
    from optprune.solvers import prune_layer

    prob, pat = random_problem(4, 8, seed=0), Pattern("structured", 0.5)
    cmp = compare(prob, pat, {"wanda": prune_layer(prob, pat, "wanda")}, window_size=4, full_row_bounds=True)
    assert cmp.qcr_bound != cmp.qcr_bound and "entrywise" in cmp.full_row_note
    assert "Full-row bounds not computed" in cmp.to_markdown()


@pytest.mark.parametrize("spec,sparsity", [("per-row", 0.5), ("2:4", None), ("unstructured", 0.6), ("per-row", 0.1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_projection_is_the_weighted_projection_in_either_working_dtype(spec, sparsity, dtype):
    """project_keep (30 bisection steps and the exact threshold) equals an independent 200-step bisection of
    sum clip(y - tau / p, 0, 1) = keep, on points inside, across and far outside the box, in float64 and in the
    float32 the QCR iterates run in."""
    pat = Pattern.parse(spec, default=sparsity)
    g = torch.Generator().manual_seed(3)
    Y = (3 * torch.randn(6, 16, generator=g, dtype=torch.float64)).to(dtype)
    metric = (0.1 + torch.rand(6, 16, generator=g, dtype=torch.float64)).to(dtype)
    M = project_keep(Y, pat, metric)
    U, P = pat.to_units(Y.double())[..., 0], pat.to_units(metric.double())[..., 0]
    keep = U.shape[-1] - pat.pruned_per_group(*Y.shape)
    lo, hi = torch.zeros_like(U[..., :1]), (U * P).abs().max(-1, keepdim=True).values + 1
    for _ in range(200):
        mid = (lo + hi) / 2
        over = (U - mid / P).clamp(0, 1).sum(-1, keepdim=True) > keep
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    expected = pat.from_units((U - hi / P).clamp(0, 1)[..., None], *Y.shape)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.allclose(M.double(), expected, atol=tol), (M - expected).abs().max()
    assert (pat.to_units(M.double())[..., 0].sum(-1) <= keep + 100 * tol).all()
