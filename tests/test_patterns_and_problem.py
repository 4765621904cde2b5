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


@pytest.mark.parametrize("spec", ["unstructured", "per-row", "2:4", "4:8", "structured"])
def test_select_mask_meets_the_pattern(spec):
    pat = Pattern.parse(spec, 0.6)
    mask = select_mask(torch.rand(5, 16), pat)
    check_mask(mask, pat)   # raises if wrong
    assert (~mask).sum() == pat.pruned_total(5, 16)


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
    with pytest.raises(PatternError, match="splits"):
        check_mask(torch.tensor([[True, False] * 8] * 3), pat)
    with pytest.raises(PatternError, match="only for the structured"):
        Pattern("per-row", 0.5, group=2)
