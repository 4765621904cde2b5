"""Every registered bound (`optprune.exact.bounds.BOUNDS`) lies below the brute-force optimum of the problem
it bounds, on tiny problems of every pattern it applies to; where it does not apply it says why in one line."""
import numpy as np
import pytest
import torch

from optprune import Pattern, random_problem, select_mask
from optprune.exact import EXACT_METHODS, brute_force, build_subblock
from optprune.exact.bounds import BOUNDS, Bound, applies, prove
from optprune.exact.brute import layer_optimum

CASES = [  # (rows, cols, pattern, sparsity): every kind of pattern
    (2, 8, "per-row", 0.5),
    (2, 8, "2:4", None),
    (2, 6, "unstructured", 0.5),
    (3, 6, "structured", 0.4),
    (4, 4, "row-block:2", 0.5),
]
LAYER_BOUNDS = [name for name in BOUNDS if name != "subblock"]
OPTIONS = {"box": dict(iters=200), "qcr": dict(iters=200), "perspective": dict(iters=40), "dnn": dict(iters=600)}


def case(seed, rows, cols, spec, sparsity):
    prob = random_problem(rows, cols, seed=seed).to(torch.float64)
    pat = Pattern.parse(spec, default=sparsity)
    return prob, pat, select_mask(prob.W.abs(), pat)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rows,cols,spec,sparsity", CASES)
@pytest.mark.parametrize("name", LAYER_BOUNDS)
def test_every_layer_bound_lies_below_the_optimum_it_bounds(seed, rows, cols, spec, sparsity, name):
    prob, pat, mask = case(seed, rows, cols, spec, sparsity)
    why = applies(name, prob, pat)
    if why:
        with pytest.raises(ValueError, match=name):
            prove(name, prob, pat, mask)
        assert "\n" not in why
        return
    bound = prove(name, prob, pat, mask, **OPTIONS[name])
    assert isinstance(bound, Bound) and bound.kind == name and bound.problem == BOUNDS[name].problem
    optimum = layer_optimum(prob, pat, refit=bound.problem == "refit")
    assert 0 <= bound.value <= optimum * (1 + 1e-9) + 1e-12
    if bound.per_row is not None:
        assert bound.per_row.sum() == pytest.approx(bound.value)


def test_some_layer_bound_applies_to_every_entrywise_pattern():
    for rows, cols, spec, sparsity in CASES:
        prob, pat, _ = case(0, rows, cols, spec, sparsity)
        usable = [name for name in LAYER_BOUNDS if not applies(name, prob, pat)]
        assert usable if pat.entrywise else not usable, (spec, usable)


@pytest.mark.parametrize("rows,cols,spec,sparsity", CASES)
@pytest.mark.parametrize("exact", sorted(EXACT_METHODS))
def test_the_subblock_bound_lies_below_its_neighbourhood_optimum(rows, cols, spec, sparsity, exact):
    """The sub-block bound covers the masks equal to the given one outside rows x window: it lies below their
    optimum (brute force over the sub-block), and its scope says so."""
    prob, pat, mask = case(0, rows, cols, spec, sparsity)
    window = np.arange(cols)
    if EXACT_METHODS[exact].problem == "refit" and not (pat.entrywise and pat.row_block == 1):
        pytest.skip("refit sub-blocks: entrywise patterns with independent rows")
    bound = prove("subblock", prob, pat, mask, rows=[0, 1], window=window, exact=exact, time_limit=30.0)
    block = build_subblock(prob, pat, mask, rows=[0, 1], window=window)
    optimum = brute_force(block.qp)[0] if EXACT_METHODS[exact].problem == "mask" else refit_optimum(block)
    assert bound.value <= optimum * (1 + 1e-7) + 1e-9
    assert bound.value >= optimum * (1 - 1e-6) - 1e-9        # these solve to optimality
    assert "outside rows [0, 1]" in bound.scope and exact in bound.scope


def refit_optimum(block) -> float:
    """The sub-block's least refit value over every feasible z (1 = pruned)."""
    from itertools import combinations, product

    per_group = [[np.array(ch, dtype=int) for ch in combinations(g, p)] for g, p in block.qp.groups]
    best = np.inf
    for choice in product(*per_group):
        keep = np.ones(block.qp.n, bool)
        for ch in choice:
            keep[ch] = False
        best = min(best, block.refit_value(keep)[0])
    return best


def test_a_bound_certifies_only_what_it_proves():
    b = Bound("qcr", "mask", 2.0, np.arange(3))
    assert b.ratio(3.0) == pytest.approx(1.5)
    assert np.isnan(Bound("qcr", "mask", 1e-9, np.arange(3)).ratio(3.0))      # under 0.1%: proves nothing
    assert np.isnan(Bound("qcr", "mask", 0.0, np.arange(3)).ratio(3.0))


def test_an_unknown_bound_names_the_registry():
    prob, pat, mask = case(0, 2, 8, "per-row", 0.5)
    with pytest.raises(ValueError, match="box, qcr, perspective, dnn, subblock"):
        prove("sdp", prob, pat, mask)
