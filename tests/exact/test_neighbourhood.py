"""Neighbourhood certificates: the row's most ambiguous decisions solved exactly, the rest fixed."""
from itertools import combinations, product

import pytest
import torch

from optprune.exact.neighbourhood import ambiguous_columns, certify_rows, neighbourhood_certificate
from optprune.patterns import Pattern
from optprune.problem import random_problem


def best_row_mask(problem, row, keep):
    """Brute force over every mask of the row keeping `keep` entries (the rest of the layer unchanged)."""
    cols = problem.shape[1]
    best, best_mask = float("inf"), None
    for S in combinations(range(cols), keep):
        m = torch.zeros(problem.shape, dtype=torch.bool)
        m[row, list(S)] = True
        value = float(problem.row_errors(m)[row])
        if value < best:
            best, best_mask = value, m[row]
    return best, best_mask


def best_n_m_row(problem, row, n, m):
    """Brute force over every N:M mask of the row (N kept of each group of M; the rest of the layer unchanged)."""
    groups = problem.shape[1] // m
    best = float("inf")
    for pick in product(*[list(combinations(range(g * m, (g + 1) * m), n)) for g in range(groups)]):
        mask = torch.zeros(problem.shape, dtype=torch.bool)
        mask[row, [j for part in pick for j in part]] = True
        best = min(best, float(problem.row_errors(mask)[row]))
    return best


@pytest.mark.parametrize("pattern", [Pattern("per-row", 0.5), Pattern.parse("2:4")], ids=["per-row", "2:4"])
def test_a_whole_row_neighbourhood_agrees_with_brute_force(pattern):
    prob = random_problem(3, 12, seed=4)
    mask = pattern.project(prob.W.abs())
    cert = neighbourhood_certificate(prob, pattern, mask, row=1, size=12)
    final = cert.improved_mask if cert.improved_mask is not None else mask
    pattern.check(final)
    best = best_row_mask(prob, 1, 6)[0] if pattern.name == "per-row" else best_n_m_row(prob, 1, 2, 4)
    assert cert.optimum == pytest.approx(best, rel=1e-7)
    assert cert.status == "optimal" and sorted(cert.positions) == list(range(12))
    assert float(prob.row_errors(final)[1]) == pytest.approx(cert.optimum, rel=1e-7)
    assert torch.equal(final[[0, 2]], mask[[0, 2]])                      # other rows untouched


def test_an_improvable_mask_is_improved_only_inside_its_positions():
    prob, pattern = random_problem(2, 14, seed=7), Pattern("per-row", 0.5)
    mask = pattern.project(-prob.W.abs())                                 # keeps the smallest weights: poor
    cert = neighbourhood_certificate(prob, pattern, mask, row=0, size=6)
    assert cert.improved_mask is not None and cert.certified        # the window's optimum, proven
    pattern.check(cert.improved_mask)
    changed = torch.nonzero(cert.improved_mask[0] != mask[0]).flatten().tolist()
    assert set(changed) <= set(cert.positions)
    assert float(prob.row_errors(cert.improved_mask)[0]) < float(prob.row_errors(mask)[0])
    assert "a better mask (" in cert.statement() and "no better mask differs from it only inside these 6" \
        in cert.statement()


def test_an_optimal_row_is_certified():
    prob, pattern = random_problem(1, 12, seed=2), Pattern("per-row", 0.5)
    _, best = best_row_mask(prob, 0, 6)
    cert = neighbourhood_certificate(prob, pattern, best[None], row=0, size=8)
    assert cert.certified and cert.value == pytest.approx(cert.optimum, rel=1e-9)
    assert "no better mask differs from this one only inside these 8 positions" in cert.statement()
    assert cert.lower_bound <= cert.optimum * (1 + 1e-9)


def test_ambiguous_columns_are_the_threshold_decisions():
    prob, pattern = random_problem(1, 20, seed=1), Pattern("per-row", 0.5)
    mask = pattern.project(prob.W.abs() * prob.G.diagonal().sqrt())
    cols = ambiguous_columns(prob, mask, 0, 6)
    score = prob.W[0] ** 2 * prob.G.diagonal()
    kept, pruned = [c for c in cols if mask[0, c]], [c for c in cols if not mask[0, c]]
    assert len(kept) == len(pruned) == 3
    assert max(score[kept]) <= sorted(score[mask[0]].tolist())[2] + 1e-12
    assert min(score[pruned]) >= sorted(score[~mask[0]].tolist(), reverse=True)[2] - 1e-12


def test_certify_rows_grows_the_window_and_keeps_improvements():
    prob, pattern = random_problem(3, 16, seed=3), Pattern("per-row", 0.5)
    mask = pattern.project(prob.W.abs())
    certs = certify_rows(prob, pattern, mask, rows=[0, 1, 2], time_budget=20.0, start_size=4)
    assert [c.row for c in certs] == [0, 1, 2]
    assert all(c.status == "optimal" for c in certs)
    assert all(len(c.positions) >= 4 for c in certs)


def test_an_improved_row_is_certified_around_its_improvement_at_the_next_window():
    """A poor mask is improved in a small window; the larger windows are then solved around the improved
    mask, and with the whole row as the last window the result is the row's brute-force optimum."""
    prob, pattern = random_problem(1, 12, seed=2), Pattern("per-row", 0.5)
    mask = pattern.project(-prob.W.abs())                                 # keeps the smallest weights
    cert, = certify_rows(prob, pattern, mask, rows=[0], time_budget=60.0, start_size=3)
    best, _ = best_row_mask(prob, 0, 6)
    assert cert.improved_mask is not None and cert.certified and len(cert.positions) == 12
    assert cert.optimum == pytest.approx(best, rel=1e-7)
    assert cert.start_value == pytest.approx(float(prob.row_errors(mask)[0]), rel=1e-9)
    assert cert.start_value > cert.optimum
    assert float(prob.row_errors(cert.improved_mask)[0]) == pytest.approx(cert.optimum, rel=1e-7)
    assert "a better mask (" in cert.statement() and "no better mask differs from it only inside these 12" \
        in cert.statement()


def test_n_m_windows_are_whole_groups_of_smallest_margin():
    prob, pattern = random_problem(1, 16, seed=8), Pattern.parse("2:4")
    mask = pattern.project(prob.W.abs())
    cols = ambiguous_columns(prob, mask, 0, 8, span=4)
    score = (prob.W[0] ** 2 * prob.G.diagonal()).reshape(4, 4)
    keep = mask[0].reshape(4, 4)
    margin = [float(score[g][keep[g]].min() - score[g][~keep[g]].max()) for g in range(4)]
    chosen = sorted(sorted(range(4), key=margin.__getitem__)[:2])
    assert cols.tolist() == [4 * g + j for g in chosen for j in range(4)]
