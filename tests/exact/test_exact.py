"""Exact HiGHS solutions equal brute-force enumeration; bounds are below optima; statuses are honest."""
from itertools import combinations

import numpy as np
import pytest
import torch

from optprune import Pattern, random_problem, select_mask
from optprune.exact import EXACT_METHODS, brute_force, build_subblock, certify_block, relaxation_bound
from optprune.patterns import PatternError

CASES = [  # (rows, cols, pattern, sparsity)
    (1, 12, "per-row", 0.5),
    (1, 12, "per-row", 0.25),
    (2, 6, "unstructured", 0.5),
    (1, 12, "2:4", None),
    (2, 8, "4:8", None),
    (3, 10, "structured", 0.4),
    (4, 6, "row-block:2", 0.5),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows,cols,spec,sparsity", CASES)
@pytest.mark.parametrize("method", sorted(m for m, e in EXACT_METHODS.items() if e.problem == "mask"))
def test_exact_mask_optimum_equals_brute_force(seed, rows, cols, spec, sparsity, method):
    prob = random_problem(rows, cols, seed=seed)
    pat = Pattern.parse(spec, default=sparsity)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    best, _ = brute_force(sb.qp)
    start = sb.keep_units(sb.base_mask)
    res = certify_block(sb, method, start)
    assert res.certified and res.status == "optimal"
    assert res.objective <= sb.value(start) + 1e-9          # never worse than the start it was given
    assert res.objective == pytest.approx(best, rel=1e-7, abs=1e-9)
    assert res.lower_bound <= res.objective + 1e-9
    # the sub-block value is the layer objective of the assembled mask, which keeps the pattern
    layer_mask = sb.layer_mask(res.mask)
    pat.check(layer_mask)
    assert prob.objective(layer_mask) == pytest.approx(best, rel=1e-9)
    bound = relaxation_bound(sb.qp)
    assert bound.status == "optimal"
    assert bound.lower_bound <= best * (1 + 1e-9) + 1e-9


def _refit_brute_force(prob, pat):
    W, G = prob.W.numpy(), prob.G.numpy()
    rows, cols = W.shape
    p = pat.pruned_per_row(cols)
    per_row = []
    for i in range(rows):
        vals = []
        for pr in combinations(range(cols), p):
            S = np.setdiff1d(np.arange(cols), pr)
            v = np.zeros(cols)
            v[S] = np.linalg.solve(G[np.ix_(S, S)], (G @ W[i])[S])
            d = W[i] - v
            vals.append(d @ G @ d)
        per_row.append(min(vals))
    return sum(per_row)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_refit_equals_brute_force(seed):
    prob = random_problem(2, 8, seed=seed)
    pat = Pattern("per-row", 0.5)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    res = certify_block(sb, "refit-oa")
    assert res.certified
    assert res.objective == pytest.approx(_refit_brute_force(prob, pat), rel=1e-6)
    # refit can only help: its optimum is below the mask-only optimum
    assert res.objective <= certify_block(sb, "milp").objective + 1e-9


def test_window_subblock_keeps_the_rest_fixed():
    prob = random_problem(2, 16, seed=3)
    pat = Pattern("per-row", 0.5)
    base = select_mask(prob.W.abs(), pat)
    sb = build_subblock(prob, pat, base, rows=[1], window=np.arange(4, 12))
    res = certify_block(sb)
    best, _ = brute_force(sb.qp)
    assert res.objective == pytest.approx(best, rel=1e-8)
    new = sb.layer_mask(res.mask)
    assert torch.equal(new[0], base[0]) and torch.equal(new[1, :4], base[1, :4])
    # optimum on the window can only improve the row, counts stay the same
    assert prob.row_errors(new)[1] <= prob.row_errors(base)[1] + 1e-9
    assert (~new[1]).sum() == (~base[1]).sum()


def test_unaligned_nm_window_is_a_valid_subblock():
    """A window that cuts N:M groups frees only the group parts inside it, with their counts."""
    prob = random_problem(1, 12, seed=4)
    pat = Pattern.parse("2:4")
    base = select_mask(prob.W.abs(), pat)
    sb = build_subblock(prob, pat, base, window=np.arange(2, 10))
    res = certify_block(sb)
    assert res.objective == pytest.approx(brute_force(sb.qp)[0], rel=1e-8)
    pat.check(sb.layer_mask(res.mask))


def test_window_that_splits_a_unit_is_rejected():
    prob = random_problem(2, 8)
    pat = Pattern("structured", 0.5, group=2)
    with pytest.raises(PatternError, match="splits a unit"):
        build_subblock(prob, pat, select_mask(prob.W.abs(), pat), window=np.arange(1, 5))


def test_a_time_limited_solve_reports_incumbent_and_bound_not_an_optimum():
    prob = random_problem(1, 64, seed=2)
    pat = Pattern("per-row", 0.5)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    res = certify_block(sb, "milp", sb.keep_units(sb.base_mask), time_limit=1e-3)
    assert res.status == "time_limit"
    assert not res.certified
    assert res.lower_bound <= res.objective
    assert res.objective <= sb.value(sb.keep_units(sb.base_mask)) + 1e-9     # the start is the incumbent


def test_unknown_exact_method_names_the_registry():
    prob = random_problem(1, 8)
    pat = Pattern("per-row", 0.5)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    with pytest.raises(ValueError, match=", ".join(repr(k) for k in sorted(EXACT_METHODS))):
        certify_block(sb, "branch-and-pray")


@pytest.mark.parametrize("seed", range(4))
def test_the_convex_reformulation_is_the_same_function_on_binaries_and_convex(seed):
    from itertools import product
    from formulations.mask import convex_reformulation

    prob = random_problem(2, 6, seed=seed)
    pat = Pattern("per-row", 0.5)
    qp = build_subblock(prob, pat, select_mask(prob.W.abs(), pat)).qp
    qcr = convex_reformulation(qp)
    assert np.linalg.eigvalsh(qcr.Q)[0] >= -1e-12 * np.abs(qp.Q).max()
    for z in product([0.0, 1.0], repeat=qp.n):
        assert qcr.value(np.array(z)) == pytest.approx(qp.value(np.array(z)), rel=1e-9, abs=1e-9)
    # tighter: the reformulation's continuous optimum bounds the binary optimum from closer below
    box = relaxation_bound(qp, 30.0).lower_bound
    assert relaxation_bound(qcr, 30.0).lower_bound >= box - 1e-9 * abs(box)
    assert relaxation_bound(qcr, 30.0).lower_bound <= brute_force(qp)[0] * (1 + 1e-9)
