"""The dense-target layer problem f(V) = ||W X - V X_hat||^2: objective, equivalence, exact optima, solvers."""
from itertools import combinations, product

import numpy as np
import pytest
import torch

from optprune.exact.solve import certify_block
from optprune.exact.subblock import build_subblock
from formulations.l0 import l0_penalized, l0_point
from formulations.penalty import penalty_v_step
from optprune.patterns import Pattern
from optprune.problem import LayerProblem, ProblemError, dense_target_problem
from optprune.solvers import METHODS, prune_layer
from optprune.solvers.base import PATTERNS_HANDLED


def streams(rows: int, cols: int, tokens: int, seed: int = 0, drift: float = 0.4):
    """W, the dense inputs X and pruned inputs X_hat = X + correlated drift (float64)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(cols, max(2, cols // 3), generator=gen, dtype=torch.float64)
    X = base @ torch.randn(base.shape[1], tokens, generator=gen, dtype=torch.float64) \
        + 0.5 * torch.randn(cols, tokens, generator=gen, dtype=torch.float64)
    X_hat = X + drift * (torch.randn(cols, cols, generator=gen, dtype=torch.float64) / cols ** 0.5) @ X \
        + 0.1 * torch.randn(cols, tokens, generator=gen, dtype=torch.float64)
    W = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return W, X, X_hat


def residual(W, X, X_hat, V) -> float:
    return float(((W @ X - V @ X_hat) ** 2).sum())


def test_objective_is_the_residual_of_the_dense_output():
    W, X, X_hat = streams(3, 10, 40)
    prob = dense_target_problem(W, X, X_hat)
    V = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert prob.objective(W_hat=V) == pytest.approx(residual(W, X, X_hat, V), rel=1e-10)
    assert prob.dense_energy() == pytest.approx(float(((W @ X) ** 2).sum()), rel=1e-12)
    keep = torch.rand(3, 10, generator=torch.Generator().manual_seed(1)) > 0.5
    assert prob.objective(keep) == pytest.approx(residual(W, X, X_hat, W * keep), rel=1e-10)


def test_symmetric_equivalent_differs_by_a_constant():
    """With lam = 0, f(V) - ||(V - W*) X_hat||^2 is the same for every V (W* H = B)."""
    W, X, X_hat = streams(2, 8, 30)
    prob = dense_target_problem(W, X, X_hat)
    sym = prob.symmetric_equivalent(ridge=0.0)
    gen = torch.Generator().manual_seed(2)
    gaps = [prob.objective(W_hat=V) - sym.objective(W_hat=V)
            for V in (torch.randn(2, 8, dtype=torch.float64, generator=gen) for _ in range(4))]
    assert max(gaps) - min(gaps) < 1e-8 * prob.dense_energy()
    assert min(gaps) >= -1e-9 * prob.dense_energy()       # the irreducible error of the drifted inputs


@pytest.mark.parametrize("pattern", [Pattern("per-row", 0.5), Pattern.parse("2:4")], ids=["per-row", "2:4"])
def test_cross_term_equal_to_G_is_todays_problem_bit_for_bit(pattern):
    """X_hat = X (cross = target = G): every method gives the same mask and weights as the plain problem."""
    W, X, _ = streams(8, 16, 64, seed=3)
    W, G = W.float(), (X @ X.T).float()
    plain, dense = LayerProblem(W, G), LayerProblem(W, G, "layer", G, G)
    for method in sorted(METHODS):
        if not PATTERNS_HANDLED[method][0](pattern):
            continue
        a, b = prune_layer(plain, pattern, method), prune_layer(dense, pattern, method)
        assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight), method
        assert b.objective == pytest.approx(a.objective, rel=1e-4, abs=1e-6 * plain.dense_energy()), method
    mask = pattern.project(W.abs())
    assert torch.equal(plain.refit(mask), dense.refit(mask))


def brute_force_optimum(W, X, X_hat, pattern, refit: bool) -> float:
    """min over every mask of the pattern (and, with refit, the exact least-squares weights)."""
    rows, cols = W.shape
    keep = cols - pattern.pruned_per_row(cols)
    per_row = []
    for i in range(rows):
        best = np.inf
        for S in combinations(range(cols), keep):
            v = torch.zeros(cols, dtype=torch.float64)
            if refit:
                v[list(S)] = torch.linalg.lstsq(X_hat[list(S)].T, (W[i] @ X)[:, None]).solution[:, 0]
            else:
                v[list(S)] = W[i, list(S)]
            best = min(best, float(((W[i] @ X - v @ X_hat) ** 2).sum()))
        per_row.append(best)
    return sum(per_row)


@pytest.mark.parametrize("exact", ["milp", "oa", "refit-oa"])
def test_exact_optimum_equals_brute_force(exact):
    W, X, X_hat = streams(2, 8, 40, seed=4)
    prob, pattern = dense_target_problem(W, X, X_hat), Pattern("per-row", 0.5)
    block = build_subblock(prob, pattern, pattern.project(W.abs()))
    res = certify_block(block, exact, time_limit=60)
    best = brute_force_optimum(W, X, X_hat, pattern, refit=exact == "refit-oa")
    assert res.status == "optimal"
    assert res.objective == pytest.approx(best, rel=1e-6)
    assert res.lower_bound <= best * (1 + 1e-6)


def test_no_method_beats_the_certified_optimum():
    W, X, X_hat = streams(2, 8, 40, seed=6)
    prob, pattern = dense_target_problem(W, X, X_hat), Pattern("per-row", 0.5)
    optimum = brute_force_optimum(W, X, X_hat, pattern, refit=True)
    for method in sorted(METHODS):
        if PATTERNS_HANDLED[method][0](pattern):
            res = prune_layer(prob, pattern, method)
            pattern.check(res.mask)
            assert res.objective >= optimum * (1 - 1e-9), method


def test_refit_solves_the_dense_target_least_squares():
    W, X, X_hat = streams(3, 10, 50, seed=7)
    prob = dense_target_problem(W, X, X_hat)
    keep = Pattern("per-row", 0.4).project(W.abs())
    V = prob.refit_exact(keep.numpy())
    for i in range(3):
        S = torch.nonzero(keep[i]).flatten()
        direct = torch.linalg.lstsq(X_hat[S].T, (W[i] @ X)[:, None]).solution[:, 0]
        assert np.allclose(V[i, S.numpy()], direct.numpy(), rtol=1e-7, atol=1e-9)
    assert prob.objective(W_hat=prob.refit(keep, iters=500, percdamp=0.0)) <= prob.objective(keep)


def test_formulations_state_the_dense_target_objective():
    W, X, X_hat = streams(2, 6, 30, seed=8)
    prob = dense_target_problem(W, X, X_hat)
    B, kappa = prob.linear64()
    _, G = prob.float64()
    V = np.random.default_rng(0).normal(size=(2, 6))
    l0 = l0_penalized(W.numpy(), G, 0.0, 100.0, B, kappa)
    assert l0.value(l0_point(V)) == pytest.approx(prob.objective(W_hat=torch.as_tensor(V)), rel=1e-10)
    pen = penalty_v_step(W.numpy(), G, np.ones(6), 0.0, np.diag(G), 0.0, B, kappa)
    assert pen.value(V.reshape(-1)) == pytest.approx(prob.objective(W_hat=torch.as_tensor(V)), rel=1e-10)


def test_a_half_given_dense_target_is_refused():
    W, X, X_hat = streams(2, 6, 30)
    with pytest.raises(ProblemError, match="both cross"):
        LayerProblem(W, X_hat @ X_hat.T, "l", X @ X_hat.T)
    with pytest.raises(ProblemError, match="cross must be"):
        LayerProblem(W, X_hat @ X_hat.T, "l", torch.zeros(5, 5), X @ X.T)


@pytest.mark.parametrize("pattern", [Pattern("per-row", 0.6), Pattern("unstructured", 0.7), Pattern.parse("2:4")],
                         ids=["per-row", "unstructured", "2:4"])
@pytest.mark.parametrize("dense", [False, True], ids=["pruned-target", "dense-target"])
def test_admm_keeps_the_pattern_and_never_loses_to_its_warm_start(pattern, dense):
    W, X, X_hat = streams(16, 32, 128, seed=9)
    prob = dense_target_problem(W, X, X_hat) if dense else LayerProblem(W, X @ X.T)
    res = prune_layer(prob, pattern, "admm")            # prune_layer checks the pattern
    for warm in ("sparsegpt", "wanda"):
        start = prune_layer(prob, pattern, warm)
        assert prune_layer(prob, pattern, "admm", warm_start=warm).objective <= start.objective * (1 + 1e-9)
    assert bool((res.weight[~res.mask] == 0).all())


def test_admm_improves_on_sparsegpt_on_a_correlated_layer():
    """Its own iterations, not only the safeguard: the ADMM support beats SparseGPT at 60% per-row."""
    from optprune.solvers.admm import admm_support
    W, X, _ = streams(16, 48, 200, seed=10)
    prob, pattern = LayerProblem(W, X @ X.T), Pattern("per-row", 0.6)
    mask, Z, history = admm_support(prob, pattern)
    pattern.check(mask)
    assert prob.objective(W_hat=prob.refit(mask, Z)) < prune_layer(prob, pattern, "sparsegpt").objective
