"""HiGHS keeps one process-wide thread scheduler: the exact solvers must work after cvxpy's and
Pyomo's HiGHS have started it (they once set threads=1, were refused, and fell back silently)."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import cvxpy as cp, numpy as np, pyomo.environ as pyo
    from optprune import Pattern, random_problem
    from optprune.exact import brute_force, build_subblock, certify_block, relaxation_bound
    x = cp.Variable(4, boolean=True)                                   # 1. cvxpy's HiGHS (MILP)
    cp.Problem(cp.Minimize(cp.sum(x)), [cp.sum(x) >= 2]).solve(solver=cp.HIGHS)
    m = pyo.ConcreteModel(); m.x = pyo.Var([0, 1], domain=pyo.Binary)  # 2. Pyomo's HiGHS
    m.c = pyo.Constraint(expr=m.x[0] + m.x[1] >= 1); m.o = pyo.Objective(expr=m.x[0] + 2 * m.x[1])
    pyo.SolverFactory("appsi_highs").solve(m)
    prob = random_problem(2, 6, seed=5)                                # 3. optprune's exact solvers
    pat = Pattern("unstructured", 0.5)
    sb = build_subblock(prob, pat, pat.project(prob.W.abs()))
    best = brute_force(sb.qp)[0]
    for method in ("milp", "oa"):
        res = certify_block(sb, method)
        assert res.status == "optimal", (method, res.status)
        assert abs(res.objective - best) <= 1e-7 * max(1.0, abs(best)), (method, res.objective, best)
    bound = relaxation_bound(sb.qp)
    assert bound.status == "optimal", bound.status
    assert bound.lower_bound <= best + 1e-9
    print("ok")
""")


def test_exact_solvers_after_cvxpy_and_pyomo_highs_in_one_fresh_process():
    pytest.importorskip("pyomo.environ", reason="Pyomo is the optional 'pyomo' extra (CI installs it)")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
