"""Each formulation is stated once; HiGHS, cvxpy and Pyomo emit that one statement and agree with
brute force and with the solvers that descend it."""
import cvxpy as cp
import highspy
import numpy as np
import pytest
import torch

from optprune import Pattern, prune_layer, random_problem, select_mask
from optprune.exact import brute_force, build_subblock, certify_block, relaxation_bound
from formulations import backends, l0, mask, penalty, refit
from optprune.solvers.maiht import maiht_iterates
from optprune.solvers.spap import spap_m_step, spap_v_step

BLOCKS = [(1, 12, "per-row", 0.5), (2, 6, "unstructured", 0.5), (1, 12, "2:4", None), (2, 8, "4:8", None),
          (3, 10, "structured", 0.4), (4, 6, "row-block:2", 0.5)]


@pytest.fixture(params=BLOCKS, ids=lambda b: f"{b[2]}-{b[0]}x{b[1]}")
def block(request):
    rows, cols, spec, sp = request.param
    prob = random_problem(rows, cols, seed=11)
    pat = Pattern.parse(spec, default=sp)
    return build_subblock(prob, pat, select_mask(prob.W.abs(), pat))


def _z(st, x):
    return np.round(np.asarray(x)[st.blocks["z"]])


def test_milp_statement_through_highspy_and_cvxpy_equals_brute_force(block):
    best, _ = brute_force(block.qp)
    st = mask.mask_milp(block.qp)
    out = backends.solve_highs(st)
    assert out.status == "optimal" and out.objective == pytest.approx(best, rel=1e-7, abs=1e-9)
    prob, x = backends.to_cvxpy(st)
    prob.solve(solver=cp.HIGHS)
    assert prob.value == pytest.approx(best, rel=1e-6, abs=1e-8)
    assert block.qp.value(_z(st, x.value)) == pytest.approx(best, rel=1e-6, abs=1e-8)


def test_milp_statement_through_pyomo_equals_brute_force(block):
    pyo = pytest.importorskip("pyomo.environ", reason="Pyomo is the optional 'pyomo' extra (CI installs it)")
    best, _ = brute_force(block.qp)
    st = mask.mask_milp(block.qp)
    mdl = backends.to_pyomo(st)
    pyo.SolverFactory("appsi_highs").solve(mdl)
    assert pyo.value(mdl.obj) == pytest.approx(best, rel=1e-7, abs=1e-9)


def test_integer_program_is_the_layer_objective_and_its_optimum_is_brute_force(block):
    st = mask.mask_ip(block.qp)
    keep = block.keep_units(block.base_mask)
    assert st.feasible(1.0 - keep)
    assert st.value(1.0 - keep) == pytest.approx(block.problem.objective(block.base_mask), rel=1e-9)
    if block.qp.n <= 12:
        assert backends.enumerate_integers(st)[0] == pytest.approx(brute_force(block.qp)[0], rel=1e-7, abs=1e-9)
    with pytest.raises(RuntimeError, match="no MIQP"):
        backends.solve_highs(st)


def test_relaxation_statement_cvxpy_equals_the_certified_highs_bound(block):
    prob, _ = backends.to_cvxpy(mask.mask_relaxation(block.qp))
    prob.solve(solver=cp.CLARABEL)
    bound = relaxation_bound(block.qp)
    assert bound.lower_bound <= prob.value * (1 + 1e-6) + 1e-8
    assert prob.value == pytest.approx(bound.lower_bound, rel=1e-4, abs=1e-8)
    assert prob.value <= brute_force(block.qp)[0] + 1e-8


def test_written_lp_and_mps_files_solve_to_the_optimum_in_plain_highs(block, tmp_path):
    pytest.importorskip("pyomo.environ", reason="Pyomo (which writes the files) is the optional 'pyomo' extra")
    best = brute_force(block.qp)[0]
    for suffix in (".lp", ".mps"):
        path = backends.write_statement(mask.mask_milp(block.qp), str(tmp_path / f"m{suffix}"))
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.readModel(path)
        h.run()
        assert h.getInfo().objective_function_value == pytest.approx(best, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_refit_integer_program_equals_the_refit_oa_optimum(seed):
    prob = random_problem(2, 6, seed=seed)
    pat = Pattern("per-row", 0.5)
    sb = build_subblock(prob, pat, select_mask(prob.W.abs(), pat))
    oa = certify_block(sb, "refit-oa")
    assert oa.certified
    st = refit.refit_ip(sb.refit_data(oa.objective * 1.01))
    best, x = backends.enumerate_integers(st)
    assert best == pytest.approx(oa.objective, rel=1e-6)
    assert np.array_equal(_z(st, x) < 0.5, oa.mask) or st.value(x) == pytest.approx(oa.objective, rel=1e-6)


@pytest.mark.parametrize("spec", ["per-row", "unstructured"])
def test_maiht_descends_the_l0_statement(spec):
    """With the penalty held fixed (track=0), mAIHT's iterates never increase the l0-penalised
    objective as stated by `l0_penalized`, evaluated at (v, s = [v != 0])."""
    prob = random_problem(3, 8, seed=2)
    pat = Pattern(spec, 0.5)
    W, G = prob.float64()
    values = []
    for X, lam, s, fX in maiht_iterates(prob, pat, iters=30, track=0.0):
        V = (X / s[None, :]).numpy()
        st = l0.l0_penalized(W, G, lam.numpy().reshape(-1), np.abs(V).max() + np.abs(W).max() + 1.0)
        point = l0.l0_point(V)
        assert st.feasible(point)
        values.append(st.value(point))
        assert float(fX.sum()) == pytest.approx(st.value(point) - float((lam * torch.as_tensor(
            (V != 0).sum(1, keepdims=True))).sum() if lam.numel() > 1 else lam.item() * (V != 0).sum()), rel=1e-9)
    assert all(b <= a * (1 + 1e-12) + 1e-12 for a, b in zip(values[1:], values[2:]))
    assert values[-1] < values[1]


def test_hard_threshold_is_the_l0_prox():
    rng = np.random.default_rng(0)
    u, lam, eta = rng.normal(size=20), 0.3, 0.5
    out = l0.hard_threshold(u, lam, eta)
    for ue, oe in zip(u, out):   # per coordinate: min over {0, u_e}
        keep_cost, zero_cost = lam, ue ** 2 / (2 * eta)
        assert oe == (ue if keep_cost < zero_cost else 0.0)


@pytest.mark.parametrize("group", [1, 2])
def test_spap_steps_solve_the_penalty_statements(group):
    """SPAP's V-step is the QP `penalty_v_step` solved by HiGHS, its m-step the LP `penalty_m_step`,
    and each step lowers L_rho as the statement states it."""
    prob = random_problem(3, 8, seed=5)
    W, G = prob.float64()
    d = np.diag(G).copy()
    lam, rho, keep = 0.01 * d.mean(), 0.7, 4 // group
    m = np.repeat((np.arange(8 // group) < keep).astype(float), group)
    Wt, Gt = torch.tensor(W), torch.tensor(G)
    V = spap_v_step(Wt @ Gt, prob.damped_gram(0.01), torch.tensor(m), torch.tensor(d), rho).numpy()
    out = backends.solve_highs(penalty.penalty_v_step(W, G, m, rho, d, lam))
    assert out.status == "optimal"
    assert np.allclose(out.x.reshape(W.shape), V, rtol=1e-5, atol=1e-7)
    assert out.objective == pytest.approx(penalty.penalty_objective(W, G, V, m, rho, d, lam), rel=1e-7)
    m_new = spap_m_step(torch.tensor(V), torch.tensor(d), keep, group).numpy()
    lp = backends.solve_highs(penalty.penalty_m_step(V, d, keep, group, rho))
    assert np.allclose(np.repeat(lp.x, group), m_new)
    assert penalty.penalty_objective(W, G, V, m_new, rho, d, lam) <= penalty.penalty_objective(W, G, V, m, rho, d, lam)


def test_spap_runs_the_penalty_method_it_states():
    prob = random_problem(4, 12, seed=6)
    res = prune_layer(prob, Pattern("structured", 0.5), "spap", steps=6)
    assert len(res.history) == 6 and all(np.isfinite(res.history))


def test_a_highs_solve_runs_in_a_thread_that_never_takes_the_process_signals(block):
    """`solve_interruptibly` starts HiGHS's thread with SIGINT and SIGTERM blocked (a signal is handled by the
    main thread only) and leaves the caller's mask as it was."""
    import signal
    import threading

    st = mask.mask_milp(block.qp)
    h = backends.quiet_highs()
    h.setOptionValue("presolve", "off")
    h.passModel(backends._highs_lp(st))
    seen = []
    h.cbMipInterrupt += lambda e: seen.append((threading.get_ident(), signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    backends.solve_interruptibly(h)
    assert h.modelStatusToString(h.getModelStatus()) == "Optimal" and seen
    assert all(ident != threading.get_ident() and {signal.SIGINT, signal.SIGTERM} <= mask_ for ident, mask_ in seen)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before and signal.SIGINT not in before
