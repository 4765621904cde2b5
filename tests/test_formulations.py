"""Each declarative formulation states the problem the solvers certify."""
import cvxpy as cp
import numpy as np
import pyomo.environ as pyo
import pytest

from formulations import integer_program, l0_penalized, penalty_alternating, pyomo_export, relaxation
from optprune import Pattern, random_problem, select_mask
from optprune.exact import brute_force, build_subblock, relaxation_bound


@pytest.fixture(params=[("unstructured", 0.5), ("per-row", 0.5), ("2:4", None)])
def block(request):
    spec, sp = request.param
    prob = random_problem(2, 8, seed=11)
    pat = Pattern.parse(spec, sp)
    return build_subblock(prob, pat, select_mask(prob.W.abs(), pat))


def test_linearized_ip_through_cvxpy_highs_equals_brute_force(block):
    best, _ = brute_force(block.qp)
    prob, z = integer_program.mask_ip_linearized(block.qp)
    prob.solve(solver=cp.HIGHS)
    assert prob.value == pytest.approx(best, rel=1e-6)
    assert block.qp.value(np.round(z.value)) == pytest.approx(best, rel=1e-6)


def test_mask_ip_objective_is_the_layer_objective(block):
    prob, z = integer_program.mask_ip(block.qp)
    zb = block.units_from_mask(block.base_mask)
    z.value = zb
    assert prob.objective.value == pytest.approx(block.problem.objective(block.base_mask), rel=1e-9)
    assert all(c.value() for c in prob.constraints)


def test_relaxation_matches_the_certified_bound(block):
    prob, _ = relaxation.mask_relaxation(block.qp)
    prob.solve(solver=cp.CLARABEL)
    lb, _ = relaxation_bound(block.qp)
    assert lb <= prob.value * (1 + 1e-6) + 1e-8
    assert prob.value == pytest.approx(lb, rel=1e-4)
    assert prob.value <= brute_force(block.qp)[0] + 1e-8


def test_pyomo_model_solves_to_the_optimum_and_writes_files(block, tmp_path):
    mdl = pyomo_export.mask_milp_model(block.qp)
    pyo.SolverFactory("appsi_highs").solve(mdl)
    assert pyo.value(mdl.obj) == pytest.approx(brute_force(block.qp)[0], rel=1e-7)
    import highspy
    for suffix in (".lp", ".mps"):      # the written file solves to the same optimum in plain HiGHS
        path = pyomo_export.write_model(block.qp, str(tmp_path / f"m{suffix}"))
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.readModel(path)
        h.run()
        assert h.getInfo().objective_function_value == pytest.approx(brute_force(block.qp)[0], rel=1e-7)


def test_refit_ip_and_l0_objectives_evaluate_as_stated():
    prob = random_problem(1, 6, seed=12)
    w, G = prob.W[0].numpy(), prob.G.numpy()
    S = np.array([0, 2, 3])
    v = np.zeros(6)
    v[S] = np.linalg.solve(G[np.ix_(S, S)], (G @ w)[S])
    model, z, vv = integer_program.refit_ip(w, G, 3, np.full(6, 100.0))
    z.value, vv.value = np.isin(np.arange(6), S, invert=True).astype(float), v
    assert model.objective.value == pytest.approx((w - v) @ G @ (w - v), rel=1e-9)
    assert all(c.value() for c in model.constraints)
    lmodel, lv, ls = l0_penalized.l0_penalized(w, G, 0.7, np.full(6, 100.0))
    lv.value, ls.value = v, (v != 0).astype(float)
    assert lmodel.objective.value == pytest.approx((w - v) @ G @ (w - v) + 0.7 * 3, rel=1e-9)


def test_hard_threshold_is_the_l0_prox():
    rng = np.random.default_rng(0)
    u, lam, eta = rng.normal(size=20), 0.3, 0.5
    out = l0_penalized.hard_threshold(u, lam, eta)
    for ue, oe in zip(u, out):   # per coordinate: min over {0, u_e}
        keep_cost, zero_cost = lam, ue ** 2 / (2 * eta)
        assert oe == (ue if keep_cost < zero_cost else 0.0)


def test_alternating_steps():
    prob = random_problem(1, 8, seed=13)
    w, G = prob.W[0].numpy(), prob.G.numpy()
    m = np.array([1, 0, 1, 1, 0, 0, 1, 0], float)
    model, v = penalty_alternating.v_step(w, G, m, np.full(8, 1e3))
    model.solve(solver=cp.CLARABEL)
    S = np.nonzero(m)[0]
    ls = np.linalg.solve(G[np.ix_(S, S)], (G @ w)[S])
    assert np.allclose(v.value[S], ls, rtol=1e-4, atol=1e-5)
    cost = np.random.default_rng(1).normal(size=8)
    lp, mm = penalty_alternating.m_step(cost, 3)
    lp.solve(solver=cp.HIGHS)
    assert set(np.nonzero(mm.value > 0.5)[0]) == set(np.argsort(cost)[:3])
    assert penalty_alternating.penalty(np.round(mm.value), 5.0) == pytest.approx(0.0, abs=1e-9)
