"""Exact HiGHS solutions equal brute-force enumeration; bounds are below optima."""
from itertools import combinations

import numpy as np
import pytest
import torch

from optprune import Pattern, random_problem, select_mask
from optprune.exact import brute_force, build_subblock, relaxation_bound, solve_mask, solve_refit_oa

CASES = [  # (rows, cols, pattern, sparsity)
    (1, 12, "per-row", 0.5),
    (1, 12, "per-row", 0.25),
    (2, 6, "unstructured", 0.5),
    (1, 12, "2:4", None),
    (2, 8, "4:8", None),
    (3, 10, "structured", 0.4),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows,cols,spec,sparsity", CASES)
@pytest.mark.parametrize("method", ["milp", "oa"])
def test_exact_mask_optimum_equals_brute_force(seed, rows, cols, spec, sparsity, method):
    prob = random_problem(rows, cols, seed=seed)
    pat = Pattern.parse(spec, sparsity)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    best, _ = brute_force(sb.qp)
    z0 = sb.units_from_mask(sb.base_mask)
    res = solve_mask(sb.qp, method, z0=z0)
    assert res.certified
    assert res.optimum <= sb.qp.value(z0) + 1e-9          # never worse than the start it was given
    assert res.optimum == pytest.approx(best, rel=1e-7, abs=1e-9)
    assert res.bound <= res.optimum + 1e-9
    # the sub-block value is the layer objective of the assembled mask
    assert prob.objective(sb.mask_from_units(res.z)) == pytest.approx(best, rel=1e-9)
    lb, _ = relaxation_bound(sb.qp)
    assert lb <= best * (1 + 1e-9) + 1e-9


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
    res = solve_refit_oa(sb)
    assert res.certified
    assert res.optimum == pytest.approx(_refit_brute_force(prob, pat), rel=1e-6)
    # refit can only help: its optimum is below the mask-only optimum
    assert res.optimum <= solve_mask(sb.qp).optimum + 1e-9


def test_window_subblock_keeps_the_rest_fixed():
    prob = random_problem(2, 16, seed=3)
    pat = Pattern("per-row", 0.5)
    base = select_mask(prob.W.abs(), pat)
    sb = build_subblock(prob, pat, base, rows=[1], window=np.arange(4, 12))
    res = solve_mask(sb.qp)
    best, _ = brute_force(sb.qp)
    assert res.optimum == pytest.approx(best, rel=1e-8)
    new = sb.mask_from_units(res.z)
    assert torch.equal(new[0], base[0]) and torch.equal(new[1, :4], base[1, :4])
    # optimum on the window can only improve the row, counts stay the same
    assert prob.row_errors(new)[1] <= prob.row_errors(base)[1] + 1e-9
    assert (~new[1]).sum() == (~base[1]).sum()


def test_bad_window_is_rejected():
    prob = random_problem(1, 8)
    with pytest.raises(ValueError, match="aligned"):
        build_subblock(prob, Pattern.parse("2:4"), select_mask(prob.W.abs(), Pattern.parse("2:4")),
                       window=np.arange(1, 5))
