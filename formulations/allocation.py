"""Sparsity allocation across layers: a multiple-choice knapsack.

Layer l takes exactly one option k of its menu: p_lk pruned weights at cost c_lk (for example the layer's
relative error at that sparsity, optionally weighted by the loss's sensitivity to the layer).  With
x_lk = 1 when layer l takes option k:

    min  sum_lk c_lk x_lk
    s.t. sum_k x_lk = 1                                  (every layer takes one option)
         P <= sum_lk p_lk x_lk <= P + slack              (the budget: exact when slack = 0)
         lo_g <= sum_{l in g, k} p_lk x_lk <= hi_g        (optional bounds per group g: a block, attention, MLP)
         x_lk in {0, 1};  options with c_lk = inf (above a layer's maximum sparsity) are absent.

A MILP: HiGHS proves its optimum (status, optimum, bound and seconds are reported); cvxpy and Pyomo emit
it like every other statement.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from .statement import Statement, StatementBuilder


@dataclass
class Allocation:
    """The data of the allocation problem (module doc); costs may hold inf (the option is absent)."""
    names: list[str]
    pruned: np.ndarray                  # L x K pruned weights of each option
    costs: np.ndarray                   # L x K
    budget: int                         # P: weights to prune in all
    slack: int = 0
    groups: list[tuple[np.ndarray, float, float]] = field(default_factory=list)   # (layers, lo, hi) in weights

    def __post_init__(self):
        self.pruned, self.costs = np.asarray(self.pruned, dtype=np.int64), np.asarray(self.costs, dtype=float)
        if self.pruned.shape != self.costs.shape or self.pruned.shape[0] != len(self.names):
            raise ValueError(f"pruned {self.pruned.shape} and costs {self.costs.shape} must be (layers, options) "
                             f"for {len(self.names)} layers")
        if np.isnan(self.costs).any():
            raise ValueError("allocation costs hold NaN")
        if not np.isfinite(self.costs).any(1).all():
            raise ValueError("every layer needs at least one allowed option (finite cost)")
        low, high = self._reachable()
        if not (low <= self.budget + self.slack and high >= self.budget):
            raise ValueError(f"the budget {self.budget} pruned weights lies outside what the menus reach "
                             f"[{low}, {high}]")

    def _reachable(self) -> tuple[int, int]:
        allowed = np.where(np.isfinite(self.costs), self.pruned, -1)
        lowest = np.where(np.isfinite(self.costs), self.pruned, np.iinfo(np.int64).max).min(1)
        return int(lowest.sum()), int(allowed.max(1).sum())

    def options(self) -> list[tuple[int, int]]:
        """(layer, option) of every allowed option, in the statement's variable order."""
        return [(l, k) for l in range(len(self.names)) for k in range(self.costs.shape[1])
                if np.isfinite(self.costs[l, k])]

    def value(self, choice: np.ndarray) -> float:
        return float(self.costs[np.arange(len(choice)), choice].sum())

    def pruned_by(self, choice: np.ndarray) -> int:
        return int(self.pruned[np.arange(len(choice)), choice].sum())

    def feasible(self, choice: np.ndarray) -> bool:
        rows = np.arange(len(choice))
        total = self.pruned_by(choice)
        return (bool(np.isfinite(self.costs[rows, choice]).all()) and self.budget <= total <= self.budget + self.slack
                and all(lo <= self.pruned[g, choice[g]].sum() <= hi for g, lo, hi in self.groups))


def allocation_milp(problem: Allocation) -> Statement:
    """The multiple-choice knapsack (module doc) as a MILP statement over x (one binary per allowed option)."""
    opts = problem.options()
    b = StatementBuilder("sparsity allocation (multiple-choice knapsack)")
    x = b.add_vars("x", len(opts), 0, 1, [problem.costs[l, k] for l, k in opts], integer=True)
    for layer in range(len(problem.names)):
        b.add_row([x[i] for i, (l, _) in enumerate(opts) if l == layer], 1.0, 1, 1)
    weights = [float(problem.pruned[l, k]) for l, k in opts]
    b.add_row(x, weights, problem.budget, problem.budget + problem.slack)
    for members, lo, hi in problem.groups:
        inside = set(int(m) for m in members)
        idx = [i for i, (l, _) in enumerate(opts) if l in inside]
        b.add_row([x[i] for i in idx], [weights[i] for i in idx], lo, hi)
    return b.build()


@dataclass(frozen=True)
class GroupBound:
    """lo <= (pruned weights of the group) / (its weights) <= hi for one group of layers, named by a selector:
    'attention' (a layer the model's adapter places in attention), 'mlp' (every other layer) or 'blocks:A-B' (blocks A..B inclusive).  Written SELECTOR=LO:HI; an empty LO
    is 0 and an empty HI is 1 (`--allocation-bound attention=:0.5`)."""
    selector: str
    lo: float = 0.0
    hi: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "GroupBound":
        selector, sep, span = spec.partition("=")
        lo, colon, hi = span.partition(":")
        try:
            bound = cls(selector.strip(), float(lo or 0.0), float(hi or 1.0))
        except ValueError:
            bound = None
        if not (sep and colon) or bound is None:
            raise ValueError(f"allocation bound {spec!r}: write SELECTOR=LO:HI, e.g. attention=0.3:0.6 or "
                             f"blocks:0-3=:0.5")
        if not 0.0 <= bound.lo <= bound.hi <= 1.0:
            raise ValueError(f"allocation bound {spec!r}: need 0 <= LO <= HI <= 1")
        bound.block_range()
        return bound

    def block_range(self) -> tuple[int, int] | None:
        if self.selector in ("attention", "mlp"):
            return None
        first, _, last = self.selector.removeprefix("blocks:").partition("-")
        if not self.selector.startswith("blocks:") or not (first.isdigit() and (last or first).isdigit()) \
                or int(first) > int(last or first):
            raise ValueError(f"allocation bound selector {self.selector!r}: use attention, mlp or blocks:A-B")
        return int(first), int(last or first)

    def selects(self, name: str, is_attention) -> bool:
        """Whether layer '<block>.<path>' is in the group; is_attention(path) says whether the block's
        layer at `path` is attention (the model's adapter knows: `ModelAdapter.is_attention`)."""
        block, _, path = name.partition(".")
        span = self.block_range()
        if span is not None:
            return span[0] <= int(block) <= span[1]
        return is_attention(path) == (self.selector == "attention")

    def group(self, names: list[str], sizes: np.ndarray, is_attention) -> tuple[np.ndarray, float, float]:
        """(members, lo, hi) in weights for `Allocation.groups`; a group that selects no layer is refused."""
        members = np.array([i for i, n in enumerate(names) if self.selects(n, is_attention)], dtype=int)
        if members.size == 0:
            raise ValueError(f"allocation bound {self.selector!r} selects no layer")
        total = float(np.asarray(sizes)[members].sum())
        return members, float(np.ceil(self.lo * total - 1e-9)), float(np.floor(self.hi * total + 1e-9))


@dataclass
class AllocationResult:
    choice: np.ndarray          # option index per layer
    objective: float
    bound: float
    status: str
    seconds: float
    pruned: int


def solve_allocation(problem: Allocation, time_limit: float = 60.0, mip_rel_gap: float = 1e-9,
                     start: np.ndarray | None = None) -> AllocationResult:
    """The allocation's optimum with HiGHS, proven within `mip_rel_gap` (the bound is reported: optimum - bound
    <= mip_rel_gap x optimum when the status is 'optimal'; at the time limit the best choice found and the
    bound); `start`: a choice (option per layer), the first incumbent if it is feasible.  Raises when no menu
    choice meets the budget."""
    from .backends import solve_highs

    t0 = time.perf_counter()
    st = allocation_milp(problem)
    opts = problem.options()
    usable = start is not None and problem.feasible(np.asarray(start))
    x0 = np.array([float(start[l] == k) for l, k in opts]) if usable else None
    out = solve_highs(st, time_limit, x0, mip_rel_gap=mip_rel_gap)
    if out.x is None:
        found = "meets the budget and bounds" if out.status == "infeasible" else f"was found in {time_limit:.0f} s"
        raise ValueError(f"no allocation {found} (HiGHS: {out.status}); widen the budget's slack or the menus")
    choice = np.zeros(len(problem.names), dtype=int)
    for i, (l, k) in enumerate(opts):
        if out.x[i] > 0.5:
            choice[l] = k
    return AllocationResult(choice, problem.value(choice), out.bound, out.status, time.perf_counter() - t0,
                            problem.pruned_by(choice))


def brute_force_allocation(problem: Allocation) -> tuple[float, np.ndarray | None]:
    """Enumerate every choice (tests: a few layers, short menus)."""
    best, best_choice = np.inf, None
    for choice in product(*[range(problem.costs.shape[1])] * len(problem.names)):
        choice = np.array(choice)
        if problem.feasible(choice) and problem.value(choice) < best:
            best, best_choice = problem.value(choice), choice
    return best, best_choice
