"""The window branch and bound (`bnb-qcr`): exact against brute force, rigorous bounds, refusals."""
from itertools import combinations

import numpy as np
import pytest
import torch

from optprune.exact.neighbourhood import neighbourhood_certificate
from optprune.exact.window_bnb import project_capped, qcr_branch_and_bound, row_window_quadratic, window_groups
from optprune.patterns import Pattern
from optprune.problem import dense_target_problem, random_problem


def brute_force(Q, c, k):
    masks = [np.isin(np.arange(len(c)), S).astype(float) for S in combinations(range(len(c)), k)]
    return min(float(m @ Q @ m + c @ m) for m in masks)


@pytest.mark.parametrize("seed", range(6))
def test_the_branch_and_bound_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = 11, 3 + seed % 5
    A = rng.normal(size=(n, 4)) @ rng.normal(size=(4, 20)) + 0.3 * rng.normal(size=(n, 20))   # correlated
    Q, c = A @ A.T, 5 * rng.normal(size=n)
    start = np.zeros(n)
    start[-k:] = 1.0
    sol = qcr_branch_and_bound(Q, c, k, start, const=2.5, batch=4)
    assert sol.status == "optimal" and sol.keep.sum() == k
    assert sol.value - 2.5 == pytest.approx(brute_force(Q, c, k), rel=1e-9, abs=1e-9)
    assert sol.lower_bound <= sol.value * (1 + 1e-9)


def test_a_stopped_search_keeps_a_valid_bound_and_a_feasible_mask():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(14, 30))
    Q, c, k = A @ A.T, rng.normal(size=14), 7
    start = np.zeros(14)
    start[:k] = 1.0
    sol = qcr_branch_and_bound(Q, c, k, start, time_limit=0.0)
    assert sol.status == "time_limit" and sol.keep.sum() == k
    assert sol.lower_bound <= brute_force(Q, c, k) + 1e-9 <= sol.value + 2e-9


@pytest.mark.parametrize("dense", [False, True], ids=["pruned-target", "dense-target"])
def test_the_window_quadratic_is_the_row_error(dense):
    """f(m) = m^T Q m + c^T m + const equals the problem's row error for every mask of the window."""
    gen = torch.Generator().manual_seed(3)
    W, X = torch.randn(3, 9, generator=gen, dtype=torch.float64), torch.randn(9, 40, generator=gen, dtype=torch.float64)
    prob = (dense_target_problem(W, X, X + 0.3 * torch.randn(9, 40, generator=gen, dtype=torch.float64))
            if dense else random_problem(3, 9, seed=3))
    mask = Pattern("per-row", 0.5).project(prob.W.abs())
    window = np.array([0, 2, 3, 5, 8])
    Q, c, const, start = row_window_quadratic(prob, mask, 1, window)
    for bits in range(2 ** len(window)):
        m = np.array([(bits >> i) & 1 for i in range(len(window))], dtype=float)
        trial = mask.clone()
        trial[1, torch.as_tensor(window)] = torch.as_tensor(m > 0.5)
        assert float(m @ Q @ m + c @ m) + const == pytest.approx(float(prob.row_errors(trial)[1]), rel=1e-9, abs=1e-9)


def test_bnb_and_highs_certify_the_same_neighbourhood():
    prob, pattern = random_problem(2, 16, seed=5), Pattern("per-row", 0.5)
    mask = pattern.project(prob.W.abs() * prob.G.diagonal().sqrt())
    bnb = neighbourhood_certificate(prob, pattern, mask, row=0, size=10, exact="bnb-qcr")
    oa = neighbourhood_certificate(prob, pattern, mask, row=0, size=10, exact="oa-qcr")
    assert bnb.positions == oa.positions and bnb.status == oa.status == "optimal"
    assert bnb.optimum == pytest.approx(oa.optimum, rel=1e-7)
    assert bnb.lower_bound <= bnb.optimum * (1 + 1e-9)


def test_bnb_is_refused_for_patterns_without_local_swaps():
    prob = random_problem(4, 8, seed=1)
    pattern = Pattern("structured", 0.5)
    with pytest.raises(ValueError, match="bnb-qcr frees decisions within budget groups"):
        neighbourhood_certificate(prob, pattern, torch.ones(4, 8, dtype=torch.bool), row=0, size=4, exact="bnb-qcr")


def test_the_projection_is_the_closest_point_of_the_capped_set():
    rng = np.random.default_rng(2)
    Y = rng.normal(size=(5, 9))
    LO, HI = np.zeros((5, 9)), np.ones((5, 9))
    LO[:, 0], HI[:, 1] = 1.0, 0.0
    P = project_capped(Y, LO, HI, 4)
    assert np.allclose(P.sum(1), 4) and (P >= LO - 1e-12).all() and (P <= HI + 1e-12).all()
    for _ in range(200):                                   # no feasible point is closer
        Z = project_capped(Y + rng.normal(size=Y.shape), LO, HI, 4)
        assert (((Y - P) ** 2).sum(1) <= ((Y - Z) ** 2).sum(1) + 1e-12).all()


def brute_force_groups(Q, c, sizes, keep):
    """min over masks keeping keep[g] entries in each consecutive group of sizes[g] (product of choices)."""
    from itertools import product
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    choices = [list(combinations(range(bounds[g], bounds[g + 1]), keep[g])) for g in range(len(sizes))]
    best = np.inf
    for pick in product(*choices):
        m = np.isin(np.arange(len(c)), [j for part in pick for j in part]).astype(float)
        best = min(best, float(m @ Q @ m + c @ m))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_the_grouped_branch_and_bound_equals_brute_force(seed):
    """N:M windows: each group keeps its own count; the optimum is the brute force over the product."""
    rng = np.random.default_rng(10 + seed)
    labels = np.repeat(np.arange(4), [4, 4, 3, 2])
    keep = [2, 2, 1, 1]
    n = len(labels)
    A = rng.normal(size=(n, 3)) @ rng.normal(size=(3, 20)) + 0.3 * rng.normal(size=(n, 20))
    Q, c = A @ A.T, 5 * rng.normal(size=n)
    start = np.concatenate([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0], [0, 1]]).astype(float)
    sol = qcr_branch_and_bound(Q, c, window_groups(labels, start), start, batch=3)
    assert sol.status == "optimal"
    assert [int(sol.keep[labels == g].sum()) for g in range(4)] == keep
    assert sol.value == pytest.approx(brute_force_groups(Q, c, [4, 4, 3, 2], keep), rel=1e-9, abs=1e-9)
    assert sol.lower_bound <= sol.value * (1 + 1e-9)


def test_the_grouped_projection_is_the_closest_point_of_the_product_set():
    rng = np.random.default_rng(4)
    groups = window_groups(np.repeat(np.arange(3), [4, 3, 5]), np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0.]))
    Y = rng.normal(size=(6, 12))
    LO, HI = np.zeros((6, 12)), np.ones((6, 12))
    LO[:, 4], HI[:, 0] = 1.0, 0.0
    P = project_capped(Y, LO, HI, groups)
    assert np.allclose(groups.sums(P), groups.keep) and (P >= LO - 1e-12).all() and (P <= HI + 1e-12).all()
    for _ in range(200):
        Z = project_capped(Y + rng.normal(size=Y.shape), LO, HI, groups)
        assert (((Y - P) ** 2).sum(1) <= ((Y - Z) ** 2).sum(1) + 1e-12).all()


def test_bnb_and_highs_certify_the_same_n_m_neighbourhood():
    prob, pattern = random_problem(2, 16, seed=6), Pattern.parse("2:4")
    mask = pattern.project(prob.W.abs())
    bnb = neighbourhood_certificate(prob, pattern, mask, row=1, size=12, exact="bnb-qcr")
    oa = neighbourhood_certificate(prob, pattern, mask, row=1, size=12, exact="oa-qcr")
    assert bnb.positions == oa.positions and len(bnb.positions) == 12
    assert bnb.status == oa.status == "optimal" and bnb.optimum == pytest.approx(oa.optimum, rel=1e-7)
    if bnb.improved_mask is not None:
        pattern.check(bnb.improved_mask)
