import math

import pytest
import torch

from optprune import LayerProblem, Pattern, PatternError, ProblemError, check_mask, random_problem, select_mask


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(PatternError, match="sparsity"):
        Pattern("per-row", bad)


def test_nm_that_does_not_divide_is_rejected():
    with pytest.raises(PatternError, match="divisible"):
        select_mask(torch.rand(2, 6), Pattern.parse("2:4"))
    with pytest.raises(PatternError):
        Pattern.parse("4:2")
    with pytest.raises(PatternError, match="unknown"):
        Pattern("diagonal", 0.5)


SPECS = ["unstructured", "per-row", "2:4", "4:8", "structured", "row-block:2"]


@pytest.mark.parametrize("spec", SPECS)
def test_select_mask_meets_the_pattern(spec):
    pat = Pattern.parse(spec, default=0.6)
    mask = select_mask(torch.rand(6, 16), pat)
    check_mask(mask, pat)   # raises if wrong
    assert (~mask).sum() == pat.pruned_total(6, 16)


@pytest.mark.parametrize("spec", SPECS)
def test_projection_is_the_best_mask_of_the_pattern_by_brute_force(spec):
    """project() maximises the kept score over every valid mask (enumerated on an 8-entry layer)."""
    from itertools import product

    pat = Pattern.parse(spec, default=0.5)
    shape = (1, 8) if spec == "4:8" else (2, 4)
    scores = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    masks = [torch.tensor(bits).reshape(shape).bool() for bits in product([0, 1], repeat=8)]
    best = max(float(scores[m].sum()) for m in masks if _valid(m, pat))
    assert float(scores[pat.project(scores)].sum()) == pytest.approx(best)


def _valid(mask, pat):
    try:
        pat.check(mask)
        return True
    except PatternError:
        return False


@pytest.mark.parametrize("spec", SPECS)
def test_lmo_is_the_linear_minimiser_over_the_relaxed_keep_set(spec):
    """<grad, lmo(grad)> <= <grad, M> for every valid mask (budget <= k, so never above 0 either)."""
    pat = Pattern.parse(spec, default=0.5)
    grad = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    S = pat.lmo(grad)
    for seed in range(20):
        M = pat.project(torch.rand(4, 8, generator=torch.Generator().manual_seed(seed)))
        assert float((grad * S).sum()) <= float((grad * M).sum()) + 1e-6
    assert float((grad * S).sum()) <= 0


def test_ties_break_by_position():
    scores = torch.ones(2, 8)
    mask = select_mask(scores, Pattern("per-row", 0.5))
    assert mask[:, :4].all() and not mask[:, 4:].any()


def test_objective_is_the_output_error():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(7, 30, generator=gen, dtype=torch.float64)
    W = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    prob = LayerProblem(W, X @ X.T)
    mask = select_mask(torch.rand(3, 7, generator=gen), Pattern("per-row", 0.4))
    direct = float(((W - W * mask) @ X).pow(2).sum())
    assert math.isclose(prob.objective(mask), direct, rel_tol=1e-10)
    assert prob.objective(torch.ones(3, 7, dtype=torch.bool)) == 0.0


def test_bad_problems_raise_clear_errors():
    W, G = torch.randn(3, 4), torch.eye(4)
    with pytest.raises(ProblemError, match="inputs"):
        LayerProblem(W, torch.eye(5))
    with pytest.raises(ProblemError, match="NaN"):
        LayerProblem(W.clone().fill_(float("nan")), G)
    with pytest.raises(ProblemError, match="symmetric"):
        LayerProblem(W, torch.triu(torch.ones(4, 4)))
    with pytest.raises(ProblemError, match="2-D"):
        LayerProblem(torch.randn(4), G)
    with pytest.raises(ProblemError, match="mask shape"):
        random_problem(3, 4).objective(torch.ones(4, 3, dtype=torch.bool))


def test_structured_column_groups():
    pat = Pattern("structured", 0.5, group=4)
    mask = select_mask(torch.rand(3, 16), pat)
    check_mask(mask, pat)
    assert (mask[0].reshape(4, 4) == mask[0].reshape(4, 4)[:, :1]).all() and (~mask[0]).sum() == 8
    assert Pattern("structured", 0.3, group=4).pruned_per_row(12) == 0      # 0.3 of 3 groups rounds down
    with pytest.raises(PatternError, match="divisible"):
        select_mask(torch.rand(2, 10), pat)
    with pytest.raises(PatternError, match="splits a unit"):
        check_mask(torch.tensor([[True, False] * 8] * 3), pat)
    with pytest.raises(PatternError, match="only for the structured"):
        Pattern("per-row", 0.5, group=2)


def test_row_blocks_keep_whole_vertical_tiles_and_shard_in_blocks():
    """The pattern added as one class: 2 x 1 tiles, the same count in every 2-row block."""
    from optprune.pruner import row_chunks

    pat = Pattern.parse("row-block:2", 0.5)
    scores = torch.rand(6, 8, generator=torch.Generator().manual_seed(0))
    mask = pat.project(scores)
    pat.check(mask)
    assert torch.equal(mask[0::2], mask[1::2])
    assert pat.row_block == 2 and not pat.entrywise and pat.swap_span(8) is None
    assert [len(r) % 2 for r in row_chunks(6, 2, pat)] == [0, 0]
    with pytest.raises(PatternError, match="splits a unit"):
        pat.check(torch.tensor([[True] * 4 + [False] * 4, [False] * 4 + [True] * 4] * 3))
    with pytest.raises(PatternError, match="divisible"):
        pat.project(torch.rand(5, 8))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_row_blocks_prune_with_score_and_obs_methods(method):
    from optprune import prune_layer

    prob = random_problem(4, 16, seed=1)
    pat = Pattern.parse("row-block:2", 0.5)
    res = prune_layer(prob, pat, method)
    pat.check(res.mask)
    assert res.objective <= prob.dense_energy()


def test_complete_fills_each_group_with_free_units_only_up_to_its_budget():
    """A checkpoint's zeros mean a valid mask once the dense model's own zeros (free) may count as kept."""
    nm = Pattern.parse("2:4")
    keep = torch.tensor([[1, 0, 0, 0, 1, 1, 0, 0],     # group 1 keeps 1 of its 2; group 2 is valid
                         [0, 0, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    free = torch.tensor([[0, 1, 1, 0, 0, 0, 1, 0],
                         [0, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    done = nm.complete(keep, free)
    assert done[0].tolist() == [True, True, False, False, True, True, False, False]   # lowest free index first
    assert done[1].tolist() == [False, False, False, True, True, False, False, True]  # group 1: no free unit
    with pytest.raises(PatternError, match="prunes"):
        nm.check(done)
    nm.check(done[:1])
    assert (done & ~keep <= free).all()           # only free entries are ever added
    per_row = Pattern.parse("per-row", 0.5)
    both = per_row.complete(keep, free)
    assert both[0].tolist() == [True, True, False, False, True, True, False, False]
    assert (both[1] == keep[1]).all()             # 2 kept + 1 free < 4: short, left for check to name
    per_row.check(both[:1])
