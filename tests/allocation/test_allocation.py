"""The sparsity allocation MILP (multiple-choice knapsack): exact optimum, budget, symmetry, bad input."""
import numpy as np
import pytest

from formulations.allocation import Allocation, allocation_milp, brute_force_allocation, solve_allocation


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


@pytest.mark.parametrize("seed", [4, 6, 9, 10])
def test_a_start_through_presolve_never_yields_a_wrong_optimum(seed):
    """Menus with tied counts (a unit of 3 KV groups at shares 0.3..0.7), the uniform choice as the start:
    HiGHS 1.16 returned the start as 'optimal' at a value it does not have (presolve mis-maps it) on these
    seeds; the answer now equals brute force."""
    rng = np.random.default_rng(seed)
    layers, options = int(rng.integers(3, 7)), int(rng.integers(3, 6))
    share = np.linspace(0.3, 0.7, options)
    pruned, costs = np.zeros((layers, options), int), np.zeros((layers, options))
    for l in range(layers):
        if l % 2 == 0:
            pruned[l], costs[l] = np.floor(share * 20).astype(int) * 3, rng.uniform(0.02, 0.2) * np.exp(3 * share)
        else:
            groups = np.floor(share * 3).astype(int)
            pruned[l], costs[l] = groups * 7, rng.uniform(0.01, 0.1) * (1 + groups)
    uniform = np.full(layers, options // 2)
    slack = int(np.diff(np.sort(pruned, axis=1), axis=1).max())
    problem = Allocation([str(l) for l in range(layers)], pruned, costs,
                         int(pruned[np.arange(layers), uniform].sum()), slack=slack)
    res = solve_allocation(problem, start=uniform)
    best, _ = brute_force_allocation(problem)
    assert res.status == "optimal" and res.objective == pytest.approx(best, rel=1e-9)
    assert res.bound <= res.objective + 1e-12


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
    from formulations import backends
    pyo = pytest.importorskip("pyomo.environ", reason="Pyomo is the optional 'pyomo' extra (CI installs it)")

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


def odd_sized_layers(spec: str):
    """Four layers of odd shapes under `spec` at 50%, menu 0.3..0.7 in steps of 0.1, seeded convex costs:
    (shapes, menu, counters, pruned, costs, uniform choice, names)."""
    from functools import partial

    from optprune import Pattern
    from optprune.allocation import pruned_count, sparsity_menu

    shapes = [(7, 13), (5, 11), (7, 13), (3, 17)]
    pattern, menu = Pattern.parse(spec, 0.5), sparsity_menu(0.5, 0.2, 0.1)
    counters = [partial(pruned_count, pattern, shape, None) for shape in shapes]
    pruned = np.array([[c(s) for s in menu] for c in counters])
    rng = np.random.default_rng(1)
    costs = rng.uniform(0.5, 3, (4, 1)) * menu[None] ** rng.uniform(1, 4, (4, 1))
    return shapes, menu, counters, pruned, costs, np.full(4, 2), [f"l{i}" for i in range(4)]


@pytest.mark.parametrize("spec", ["unstructured", "per-row"])
def test_the_window_milp_bounds_the_exact_budget_and_the_remainder_meets_it(spec):
    """Layers of odd sizes and costs whose window optimum prunes more than the uniform count P: the window's
    optimum is no worse than the exact-budget optimum (brute force), and the placed remainder brings the
    count back to P exactly (per-row: to within one row's granule), only by giving weights back."""
    from optprune.allocation import milp_allocation, place_remainder

    shapes, menu, counters, pruned, costs, uniform, names = odd_sized_layers(spec)
    res = milp_allocation(names, pruned, costs, uniform)
    budget = int(pruned[np.arange(4), uniform].sum())
    exact, _ = brute_force_allocation(Allocation(names, pruned, costs, budget))
    assert res.status == "optimal" and res.bound <= res.objective <= exact + 1e-12
    assert res.pruned > budget                                   # the remainder has work to do
    placed, left, moved = place_remainder(names, menu[res.choice], counters, res.pruned - budget, costs, pruned,
                                          res.choice)
    assert sum(c(s) for c, s in zip(counters, placed)) == budget + left
    assert left == 0 if spec == "unstructured" else 0 <= left < max(r for r, _ in shapes)
    assert all(p <= s + 1e-12 for p, s in zip(placed, menu[res.choice]))
    assert len(moved) == int(np.sum(placed < menu[res.choice])) and (moved or left == res.pruned - budget)


def test_the_remainder_never_takes_a_group_below_its_lower_bound():
    """The window optimum prunes more than P; with a lower bound on the group {l0, l1} at what the MILP chose
    there, the surplus may only come back from l2 and l3."""
    from optprune.allocation import milp_allocation, place_remainder

    _, menu, counters, pruned, costs, uniform, names = odd_sized_layers("unstructured")
    free = milp_allocation(names, pruned, costs, uniform)
    members = np.array([0, 1])
    floor = int(pruned[members, free.choice[members]].sum())
    groups = [(members, floor, 10**9)]
    res = milp_allocation(names, pruned, costs, uniform, groups=groups)
    budget = int(pruned[np.arange(4), uniform].sum())
    placed, left, _ = place_remainder(names, menu[res.choice], counters, res.pruned - budget, costs, pruned,
                                      res.choice, groups)
    counts = [c(s) for c, s in zip(counters, placed)]
    assert res.pruned > budget and counts[0] + counts[1] >= floor
    assert sum(counts) == budget + left and left < res.pruned - budget      # the others gave weights back


@pytest.mark.parametrize("spec,selected", [("attention=0.1:0.4", ["0.self_attn.q_proj", "1.attn.c_attn"]),
                                           ("mlp=:0.6", ["0.mlp.up_proj", "1.mlp.c_fc"]),
                                           ("blocks:1-1=0.5:", ["1.attn.c_attn", "1.mlp.c_fc"])])
def test_a_group_bound_selects_its_layers_and_converts_to_weights(spec, selected):
    from formulations.allocation import GroupBound

    names = ["0.self_attn.q_proj", "0.mlp.up_proj", "1.attn.c_attn", "1.mlp.c_fc"]
    bound = GroupBound.parse(spec)
    is_attention = lambda path: path.split(".")[0] in ("self_attn", "attn")      # what an adapter would say
    assert [n for n in names if bound.selects(n, is_attention)] == selected
    members, lo, hi = bound.group(names, np.array([10, 20, 30, 40]), is_attention)
    total = sum([10, 20, 30, 40][i] for i in members)
    assert (lo, hi) == (np.ceil(bound.lo * total), np.floor(bound.hi * total))


@pytest.mark.parametrize("spec,message", [("attention", "write SELECTOR=LO:HI"), ("mlp=0.7:0.2", "LO <= HI"),
                                          ("heads=0:0.5", "use attention, mlp or blocks:A-B"),
                                          ("blocks:3-1=0:0.5", "use attention, mlp or blocks:A-B"),
                                          ("mlp=a:0.5", "write SELECTOR=LO:HI")])
def test_bad_group_bounds_are_refused_with_one_line(spec, message):
    from optprune.config import PruneConfig

    with pytest.raises(ValueError, match=message):
        PruneConfig(method="sparsegpt", pattern="unstructured", allocation="milp", allocation_bounds=(spec,))
    with pytest.raises(ValueError, match="needs --allocation milp"):
        PruneConfig(method="sparsegpt", pattern="unstructured", allocation="owl", allocation_bounds=("mlp=0:0.5",))


def test_the_menu_is_centred_and_clipped():
    from optprune.allocation import sparsity_menu

    assert sparsity_menu(0.6, 0.1, 0.05) == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7])
    assert sparsity_menu(0.9, 0.1, 0.05).max() == pytest.approx(0.95)
    assert sparsity_menu(0.05, 0.1, 0.05).min() == 0.0


@pytest.mark.parametrize("kind,cost", [("owl", "error"), ("milp", "error"), ("milp", "sensitivity"),
                                       ("milp", "loss")])
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
        names = list(alloc["options"])                                            # the MILP solved again
        again = solve_allocation(Allocation(names, [alloc["options"][n]["pruned"] for n in names],
                                            [alloc["options"][n]["cost"] for n in names], alloc["milp"]["budget"],
                                            slack=alloc["milp"]["pruned"] - alloc["milp"]["budget"]))
        assert again.objective == pytest.approx(alloc["milp"]["objective"], rel=1e-3)
        assert alloc["milp"]["status"] == "optimal"
        assert alloc["milp"]["objective"] <= alloc["uniform_cost"] + 1e-12
        assert len(set(alloc["sparsity"].values())) > 1
        if cost == "sensitivity":
            weights = np.array(list(alloc["sensitivity"].values()))
            assert np.isfinite(weights).all() and (weights > 0).all() and weights.mean() == pytest.approx(1.0)
        if cost == "loss":
            assert set(alloc["loss_increase"]) == set(alloc["sparsity"])
            assert all(np.isfinite(v) for v in alloc["loss_increase"].values())
    else:
        assert abs(alloc["achieved_sparsity"] - 0.5) < 0.02


def test_the_pipeline_keeps_a_group_bound_and_still_meets_the_budget(tiny_net):
    """Bounded to prune attention 5 points more than the unbounded optimum does, the MILP keeps the bound,
    prunes exactly the uniform count, and pays at least the unbounded optimum."""
    from dataclasses import replace

    from optprune.adapters import adapter_for
    from optprune.allocation import allocate
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from formulations.allocation import GroupBound

    net, _, windows = tiny_net
    free = PruneConfig(method="sparsegpt", pattern="unstructured", sparsity=0.5, dtype="float32", device="cpu",
                       allocation="milp", allocation_spread=0.2, allocation_step=0.1)
    adapter = adapter_for(net)
    sizes = {f"{b}.{n}": lin.weight.numel() for b, blk in enumerate(adapter.blocks(net))
             for n, lin in adapter.targets(blk).items()}
    attention = [n for n in sizes if GroupBound("attention").selects(n, adapter.is_attention)]
    assert 0 < len(attention) < len(sizes)

    unbounded = allocate(net, adapter, windows, free)
    share = sum(unbounded["sparsity"][n] * sizes[n] for n in attention) / sum(sizes[n] for n in attention)
    spec = f"attention={share + 0.05:.3f}:"
    report = run_pruning(net, windows, replace(free, allocation_bounds=(spec,)), adapter)
    bounded = report["allocation"]
    layers = {f"{b}.{n}": lin.weight for b, blk in enumerate(adapter.blocks(net))
              for n, lin in adapter.targets(blk).items()}
    pruned_share = sum(int((layers[n] == 0).sum()) for n in attention) / sum(sizes[n] for n in attention)
    assert pruned_share >= share + 0.05 - 1e-3 and pruned_share == pytest.approx(bounded["groups"][spec], abs=1e-9)
    assert bounded["achieved_sparsity"] == 0.5 and bounded["milp"]["status"] == "optimal"
    assert bounded["milp"]["objective"] >= unbounded["milp"]["objective"] - 1e-12


def test_the_pricing_pass_is_kept_and_shared_by_runs_that_price_alike(tiny, tiny_net, tmp_path, monkeypatch):
    """An error-priced run on the first 2 windows keeps its pricing pass; a sensitivity-priced run, a run
    with block reconstruction and one on 4 windows priced on its first 2 read it back (the survey is not
    called), the first choosing as if it had priced afresh; another menu or other windows price again."""
    from dataclasses import replace

    import torch
    import optprune.allocation
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from optprune.checkpoints.model_io import load_model

    def fresh():
        return load_model(str(tiny[0]), dtype=torch.float32)[0]
    _, _, windows = tiny_net
    cache = tmp_path / "pricing"
    error = PruneConfig(method="sparsegpt", pattern="per-row", sparsity=0.5, dtype="float32", device="cpu",
                        allocation="milp", allocation_spread=0.2, allocation_step=0.1)
    sensitivity = replace(error, allocation_cost="sensitivity")
    net = fresh()
    afresh = run_pruning(net, windows[:2], sensitivity, adapter_for(net))["allocation"]
    net = fresh()
    error, sensitivity = (replace(c, pricing_cache=str(cache)) for c in (error, sensitivity))
    run_pruning(net, windows[:2], error, adapter_for(net))
    assert len(list(cache.glob("survey-*.json"))) == 1
    survey = optprune.allocation.survey
    monkeypatch.setattr(optprune.allocation, "survey", lambda *a, **k: pytest.fail("priced again"))
    net = fresh()
    reused = run_pruning(net, windows[:2], sensitivity, adapter_for(net))["allocation"]
    assert reused["sparsity"] == afresh["sparsity"] and reused["options"] == afresh["options"]
    assert reused["pricing_cached"].startswith("survey-") and afresh["pricing_cached"] is None
    for alike, run_windows in ((replace(sensitivity, reconstruct="block", reconstruct_epochs=1), windows[:2]),
                               (replace(error, nsamples=4, allocation_windows=2), windows)):
        net = fresh()
        assert run_pruning(net, run_windows, alike, adapter_for(net))["allocation"]["pricing_cached"]
    monkeypatch.setattr(optprune.allocation, "survey", survey)
    for other, run_windows in ((replace(error, allocation_step=0.05), windows[:2]), (error, windows[2:])):
        net = fresh()
        assert run_pruning(net, run_windows, other, adapter_for(net))["allocation"]["pricing_cached"] is None
    assert len(list(cache.glob("survey-*.json"))) == 3


def test_pricing_on_the_first_windows_is_pricing_on_those_windows_alone(tiny_net):
    from dataclasses import replace

    from optprune.adapters import adapter_for
    from optprune.allocation import allocate
    from optprune.api import run_fingerprint
    from optprune.config import PruneConfig

    net, _, windows = tiny_net
    every = PruneConfig(method="sparsegpt", pattern="unstructured", sparsity=0.5, dtype="float32", device="cpu",
                        allocation="milp", allocation_cost="sensitivity", allocation_spread=0.2,
                        allocation_step=0.1, nsamples=len(windows))
    first_two = replace(every, allocation_windows=2)
    subset = allocate(net, adapter_for(net), windows, first_two)
    alone = allocate(net, adapter_for(net), windows[:2], every)
    assert subset["sparsity"] == alone["sparsity"]
    assert subset["sensitivity"] == pytest.approx(alone["sensitivity"], rel=1e-6)
    assert allocate(net, adapter_for(net), windows, every)["sensitivity"] != pytest.approx(subset["sensitivity"])
    assert run_fingerprint(net, windows, first_two) != run_fingerprint(net, windows, every)
    with pytest.raises(ValueError, match="allocation_windows must be between 0"):
        replace(every, allocation_windows=len(windows) + 1)


def test_a_resumed_milp_run_reads_its_allocation_back_and_finishes_bit_for_bit(tiny, tiny_net, tmp_path,
                                                                               monkeypatch):
    import torch
    import optprune.api
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from optprune.checkpoints.model_io import load_model

    net, _, windows = tiny_net
    config = PruneConfig(method="sparsegpt", pattern="unstructured", sparsity=0.5, dtype="float32", device="cpu",
                         allocation="milp", allocation_spread=0.2, allocation_step=0.1)
    first = run_pruning(net, windows, config, adapter_for(net), tmp_path / "state")
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    (tmp_path / "state" / "block001.pt").unlink()                  # as if killed during block 1
    monkeypatch.setattr(optprune.api, "allocate", lambda *a: pytest.fail("the pricing pass ran again"))
    net2, _, _ = load_model(str(tiny[0]), dtype=torch.float32)
    again = run_pruning(net2, windows, config, adapter_for(net2), tmp_path / "state")
    assert again["allocation"] == first["allocation"]
    for k, v in net2.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_the_loss_rise_of_one_pruned_layer_is_measured_and_the_weights_restored(tiny_net):
    import copy

    import torch
    from optprune.adapters import adapter_for
    from optprune.allocation import loss_increases

    net, _, windows = tiny_net
    net = copy.deepcopy(net)
    adapter = adapter_for(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lin = adapter.targets(adapter.blocks(net)[1])["mlp.down_proj"]
    rise = loss_increases(net, adapter, windows, {"1.mlp.down_proj": torch.zeros_like(lin.weight),
                                                  "0.self_attn.q_proj": adapter.blocks(net)[0].self_attn.q_proj.weight},
                          "cpu")
    ids = windows[:2]
    with torch.no_grad():
        dense = float(net(ids, labels=ids).loss)
        lin.weight.data.zero_()
        zeroed = float(net(ids, labels=ids).loss)
    assert rise["1.mlp.down_proj"] == pytest.approx(zeroed - dense, abs=1e-6) and zeroed != dense
    assert rise["0.self_attn.q_proj"] == pytest.approx(0.0, abs=1e-7)        # unchanged weights: no rise
    lin.weight.data.copy_(before["model.layers.1.mlp.down_proj.weight"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_the_loss_cost_is_refused_for_structured_units():
    from optprune.config import PruneConfig

    with pytest.raises(ValueError, match="loss prices single linears"):
        PruneConfig(method="wanda", pattern="structured", sparsity=0.3, allocation="milp", allocation_cost="loss")


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


def _prunable_parameters(net) -> int:
    from optprune.adapters import adapter_for

    adapter = adapter_for(net)
    return sum(lin.weight.numel() for b in adapter.blocks(net) for lin in adapter.targets(b).values())


@pytest.mark.parametrize("kind", ["owl", "milp"])
def test_structured_allocation_shares_channels_and_kv_groups_within_the_budget(tiny_net, kind):
    import torch
    from optprune.adapters import adapter_for, block_widths
    from optprune.api import run_pruning
    from optprune.config import PruneConfig

    net, _, windows = tiny_net
    before = _prunable_parameters(net)
    uniform = type(net)(net.config)
    uniform.load_state_dict(net.state_dict())
    base = dict(method="wanda", pattern="structured", sparsity=0.3, dtype="float32", device="cpu")
    run_pruning(uniform, windows, PruneConfig(**base), adapter_for(uniform))
    config = PruneConfig(**base, allocation=kind, allocation_spread=0.25, allocation_step=0.125)
    alloc = run_pruning(net, windows, config, adapter_for(net))["allocation"]
    assert set(alloc["sparsity"]) == {f"{b}.{n}" for b in (0, 1) for n in ("mlp.down_proj", "self_attn.o_proj")}
    removed = 1 - _prunable_parameters(net) / before
    assert removed == pytest.approx(alloc["achieved_sparsity"], abs=1e-9)
    widths = [block_widths(b, adapter_for(net)) for b in adapter_for(net).blocks(net)]
    if kind == "milp":                            # the uniform run's removed parameters, exactly
        assert _prunable_parameters(net) == _prunable_parameters(uniform)
        assert alloc["milp"]["status"] == "optimal" and alloc["milp"]["objective"] <= alloc["uniform_cost"] + 1e-12
    else:                                         # OWL: the two blocks differ in outliers, so in widths
        assert widths[0] != widths[1] and abs(removed - 0.3) < 0.1
    ids = torch.randint(0, 20, (1, 12))
    assert torch.isfinite(net(ids).logits).all()


def test_a_structured_model_of_unequal_blocks_saves_and_loads_back(tiny_net, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    import optprune
    from optprune.adapters import adapter_for
    from optprune.api import run_pruning
    from optprune.config import PruneConfig
    from optprune.checkpoints.model_io import save_model

    net, tok, windows = tiny_net
    config = PruneConfig(method="wanda", pattern="structured", sparsity=0.3, dtype="float32", device="cpu",
                         allocation="owl")
    run_pruning(net, windows, config, adapter_for(net))
    saved = save_model(net, tok, tmp_path / "out", "input", structured=True)
    assert saved["format"] == "plain" and saved["loader"] == "transformers (trust_remote_code=True)"
    assert "unequal widths" in saved["why"]
    assert len(net.config.optprune_block_widths) == 2
    back, _ = optprune.load_pretrained(str(tmp_path / "out"))
    ids = torch.randint(0, 20, (1, 12))
    assert torch.allclose(back(ids).logits, net(ids).logits, atol=1e-5)
    with pytest.raises(Exception):                # without its modeling file transformers cannot fit unequal blocks
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))


def test_the_cli_plots_the_allocation_per_block_and_shows_the_pricing_pass(cli_prune, tmp_path, capsys):
    import json

    from optprune.allocation import allocation_by_kind

    assert cli_prune(tmp_path / "out", method="wanda", pattern="structured", extra=("--allocation", "owl")) == 0
    err = capsys.readouterr().err
    assert "price the owl allocation: block 1/2" in err and "price the owl allocation: block 2/2" in err
    assert err.index("price the owl allocation: block 2/2") < err.index("prune wanda: block 1/2")
    report = json.loads((tmp_path / "out" / "optprune_report.json").read_text())
    kinds = allocation_by_kind(report["allocation"]["sparsity"])
    assert set(kinds) == {"mlp.down_proj", "self_attn.o_proj"} and set(kinds["mlp.down_proj"]) == {0, 1}
    assert (tmp_path / "out" / "allocation.png").stat().st_size > 1000
