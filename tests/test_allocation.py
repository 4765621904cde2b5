"""The sparsity allocation MILP (multiple-choice knapsack): exact optimum, budget, symmetry, bad input."""
import numpy as np
import pytest

from optprune.formulations.allocation import Allocation, allocation_milp, brute_force_allocation, solve_allocation


def random_allocation(layers=4, options=5, seed=0, slack=0, groups=()):
    """Layers of different sizes, menus of sparsities 0.3..0.7 in equal steps, random convex costs."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([4, 8, 12], size=layers) * 10
    menu = np.linspace(0.3, 0.7, options)
    pruned = np.round(sizes[:, None] * menu[None, :]).astype(int)
    costs = rng.uniform(0.1, 2.0, (layers, 1)) * np.exp(rng.uniform(2, 6, (layers, 1)) * menu[None, :])
    budget = int(round(0.5 * sizes.sum()))
    return Allocation([f"l{i}" for i in range(layers)], pruned, costs, budget, slack, list(groups))


@pytest.mark.parametrize("seed", range(6))
def test_the_milp_optimum_equals_brute_force(seed):
    problem = random_allocation(seed=seed, slack=20)
    best, choice = brute_force_allocation(problem)
    res = solve_allocation(problem)
    assert res.status == "optimal"
    assert res.objective == pytest.approx(best, rel=1e-9)
    assert res.bound <= best * (1 + 1e-9)
    assert problem.feasible(res.choice)


def test_the_budget_is_met_exactly_when_the_menus_allow_it():
    problem = random_allocation(layers=5, seed=3)
    res = solve_allocation(problem)
    assert res.pruned == problem.budget == problem.pruned_by(res.choice)


def test_identical_layers_get_the_uniform_allocation():
    menu = np.linspace(0.3, 0.7, 9)
    pruned = np.tile(np.round(100 * menu).astype(int), (6, 1))
    costs = np.tile(np.exp(4 * menu), (6, 1))            # strictly convex: the uniform choice is the unique optimum
    res = solve_allocation(Allocation([f"l{i}" for i in range(6)], pruned, costs, budget=6 * 50))
    assert (res.choice == 4).all()


def test_group_bounds_are_kept_and_priced():
    free = random_allocation(seed=5, slack=20)
    res_free = solve_allocation(free)
    g = np.array([0, 1])
    cap = free.pruned[g, res_free.choice[g]].sum() - 10
    bounded = random_allocation(seed=5, slack=20, groups=[(g, 0, cap)])
    res = solve_allocation(bounded)
    assert bounded.pruned[g, res.choice[g]].sum() <= cap
    assert res.objective >= res_free.objective - 1e-12
    assert res.objective == pytest.approx(brute_force_allocation(bounded)[0], rel=1e-9)


def test_absent_options_are_never_chosen():
    problem = random_allocation(seed=1, slack=20)
    problem.costs[:, -1] = np.inf                          # a maximum per-layer sparsity below the top option
    res = solve_allocation(problem)
    assert (res.choice != problem.costs.shape[1] - 1).all()
    assert allocation_milp(problem).n == problem.costs.size - len(problem.names)


def test_bad_allocations_are_refused_with_one_line():
    with pytest.raises(ValueError, match="outside what the menus reach"):
        Allocation(["a", "b"], [[1, 2], [1, 2]], [[1.0, 2.0], [1.0, 2.0]], budget=10)
    with pytest.raises(ValueError, match="NaN"):
        Allocation(["a"], [[1, 2]], [[np.nan, 2.0]], budget=1)
    with pytest.raises(ValueError, match="at least one allowed option"):
        Allocation(["a"], [[1, 2]], [[np.inf, np.inf]], budget=1)
    with pytest.raises(ValueError, match="must be \\(layers, options\\)"):
        Allocation(["a", "b"], [[1, 2]], [[1.0, 2.0]], budget=1)


def test_the_statement_through_cvxpy_and_pyomo_gives_the_same_optimum():
    import cvxpy as cp
    import pyomo.environ as pyo
    from optprune.formulations import backends

    problem = random_allocation(seed=2, slack=20)
    best, _ = brute_force_allocation(problem)
    st = allocation_milp(problem)
    prob, _ = backends.to_cvxpy(st)
    prob.solve(solver=cp.HIGHS)
    assert prob.value == pytest.approx(best, rel=1e-7)
    mdl = backends.to_pyomo(st)
    pyo.SolverFactory("appsi_highs").solve(mdl)
    assert pyo.value(mdl.obj) == pytest.approx(best, rel=1e-7)


def test_owl_matches_a_hand_computation():
    from optprune.allocation import outlier_ratio, owl_sparsities
    import torch

    scores = [torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0])]
    # mean 3.9, 5 x mean = 19.5: one entry of ten lies above
    assert outlier_ratio(scores) == pytest.approx(0.1)
    # D = (0.1, 0.3, 0.2): a = 2 * 0.08 * (0, 1, 0.5) = (0, 0.16, 0.08), mean 0.08
    s = owl_sparsities([0.1, 0.3, 0.2], 0.6)
    assert s == pytest.approx([0.68, 0.52, 0.60])
    assert owl_sparsities([0.2, 0.2], 0.5) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="lower lam"):
        owl_sparsities([0.0, 1.0], 0.9, lam=0.2)


def test_the_menu_is_centred_and_clipped():
    from optprune.allocation import sparsity_menu

    assert sparsity_menu(0.6, 0.1, 0.05) == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7])
    assert sparsity_menu(0.9, 0.1, 0.05).max() == pytest.approx(0.95)
    assert sparsity_menu(0.05, 0.1, 0.05).min() == 0.0


@pytest.mark.parametrize("kind,cost", [("owl", "error"), ("milp", "error"), ("milp", "sensitivity")])
def test_the_pipeline_allocates_and_meets_the_budget(tiny_net, kind, cost):
    import torch
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig

    net, _, windows = tiny_net
    config = PruneConfig(method="sparsegpt", pattern="per-row", sparsity=0.5, dtype="float32", device="cpu",
                         allocation=kind, allocation_cost=cost, allocation_spread=0.2, allocation_step=0.1)
    report = run_pruning(net, windows, config, adapter_for(net))
    alloc = report["allocation"]
    zeros = sum(int((lin.weight == 0).sum()) for b in adapter_for(net).blocks(net)
                for lin in adapter_for(net).targets(b).values())
    total = sum(lin.weight.numel() for b in adapter_for(net).blocks(net) for lin in adapter_for(net).targets(b).values())
    assert zeros / total == pytest.approx(alloc["achieved_sparsity"], abs=1e-3)    # random weights hold no zeros
    layers = {f"{r['block']}.{r['layer']}": r["sparsity"] for r in report["layers"]}
    for name, s in alloc["sparsity"].items():
        assert layers[name] == pytest.approx(s, abs=1 / 32 + 1e-9), name
    if kind == "milp":
        assert alloc["achieved_sparsity"] == 0.5                                 # the uniform count, exactly
        assert alloc["milp"]["status"] == "optimal"
        assert alloc["milp"]["objective"] <= alloc["uniform_cost"] + 1e-12
        assert len(set(alloc["sparsity"].values())) > 1
        if cost == "sensitivity":
            weights = np.array(list(alloc["sensitivity"].values()))
            assert np.isfinite(weights).all() and (weights > 0).all() and weights.mean() == pytest.approx(1.0)
    else:
        assert abs(alloc["achieved_sparsity"] - 0.5) < 0.02


def test_the_output_fisher_is_the_mean_squared_gradient_of_each_output(tiny_net):
    import torch
    from optprune.adapters import adapter_for
    from optprune.allocation import output_fisher

    net, _, windows = tiny_net
    adapter = adapter_for(net)
    fisher = output_fisher(net, adapter, windows, torch.device("cpu"), max_windows=2)
    lin = adapter.blocks(net)[1].mlp.down_proj
    seen = []

    def grab(_m, _i, out):
        out.register_hook(lambda g: seen.append(g))
    lin.register_forward_hook(grab)
    for w in windows[:2]:
        net(w[None], labels=w[None]).loss.backward()
    want = sum(float(g.pow(2).mean(-1).sum()) for g in seen) / windows[:2].numel()
    assert fisher["1.mlp.down_proj"] == pytest.approx(want, rel=1e-5)
    assert len(fisher) == 14 and all(v > 0 for v in fisher.values())


def test_allocation_is_refused_for_n_m_before_any_work():
    from optprune.config import PruneConfig

    with pytest.raises(ValueError, match="2:4 stays uniform per layer"):
        PruneConfig(method="sparsegpt", pattern="2:4", allocation="milp")
